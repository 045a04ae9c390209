"""The Usage app: tokens per day drawn from /api/usage, a user's own rows only, and for an
admin the cost and break-even of /api/usage/cost, each chart with its table."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.conftest import SMOLLM2
from tests.support.server import Server
from tests.web.app_checks import Scheme, check_app, fits_a_phone, page_errors
from tests.web.conftest import ADMIN, USER, Desk, open_app


@pytest.fixture(scope="module")
def chatted(desk_server: Server, session_key: Callable[[Server, str], str]) -> None:
    """A few chat requests by each user, so the log has tokens to show."""
    for user in (USER, ADMIN, USER):
        answer = httpx.post(
            f"{desk_server.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {session_key(desk_server, user)}"},
            json={
                "model": SMOLLM2,
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 4,
            },
            timeout=120,
        )
        assert answer.status_code == 200, answer.text


def usage_rows(page: Page) -> list[list[str]]:
    table = page.get_by_role("table", name="Usage rows")
    expect(table.locator("tbody tr").first).to_be_visible()
    return [row.locator("td").all_inner_texts() for row in table.locator("tbody tr").all()]


def test_a_user_sees_charts_of_their_own_usage_only(desk: Desk, chatted: None) -> None:
    page = desk.logged_in(USER)
    errors = page_errors(page)
    open_app(page, "Usage")
    chart = page.get_by_role("img", name="Tokens per day by model")
    expect(chart).to_be_visible()
    expect(chart.locator("rect")).not_to_have_count(0)  # bars drawn from the data
    rows = usage_rows(page)
    assert rows and {row[1] for row in rows} == {USER}
    assert {row[3] for row in rows} == {SMOLLM2}
    # Cost describes the whole installation: not shown to a user, and refused by the server.
    expect(page.get_by_role("heading", name="Cost and break-even")).to_have_count(0)
    status = page.evaluate("async () => (await fetch('/api/usage/cost')).status")
    assert status == 403
    # Grouping by user is the hash state: a reload keeps it.
    page.get_by_label("Group by").select_option("user")
    expect(page.get_by_role("img", name="Tokens per day by user")).to_be_visible()
    page.reload()
    expect(page.get_by_label("Group by")).to_have_value("user")
    expect(page.get_by_role("dialog", name="Usage").locator(".chart-legend")).to_have_text(USER)
    assert errors == []


def test_an_admin_sees_everyone_with_cost_and_break_even(desk: Desk, chatted: None) -> None:
    page = desk.logged_in(ADMIN)
    errors = page_errors(page)
    open_app(page, "Usage")
    assert {row[1] for row in usage_rows(page)} == {USER, ADMIN}
    expect(page.get_by_role("heading", name="Cost and break-even")).to_be_visible()
    expect(page.get_by_role("img", name="Cost per day by model")).to_be_visible()
    breakeven = page.get_by_role("img", name="Break-even volume against each cloud model")
    expect(breakeven.locator(".chart-marker")).to_have_count(1)
    cloud = page.get_by_role("table", name="Against cloud models")
    expect(cloud.locator("tbody tr")).not_to_have_count(0)
    total = page.get_by_role("table", name="Cost per node").locator("tbody tr").last
    expect(total.locator("td").first).to_have_text("total")
    assert errors == []


def test_at_phone_width_the_window_fills_the_screen(desk: Desk, chatted: None) -> None:
    page = desk.logged_in(ADMIN, width=390, height=800)
    open_app(page, "Usage")
    expect(page.get_by_role("table", name="Cost per node")).to_be_visible()
    fits_a_phone(page, "Usage")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_accessible_with_screenshots(desk: Desk, chatted: None, scheme: Scheme) -> None:
    page = desk.logged_in(ADMIN, color_scheme=scheme, bypass_csp=True)
    open_app(page, "Usage")
    priced = page.get_by_role("table", name="Cost per node")
    check_app(page, "Usage", "usage", scheme, lambda _: expect(priced).to_be_visible())
