"""The Audit app: records browsed, the log verified by the CLI's verifier (and a tampered log
caught), the bundle downloaded and accepted by ``blackroad audit verify``.

The module has a server of its own: its last test edits that server's database by hand.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.support.server import HTTP_TIMEOUT, Server, blackroad
from tests.web.app_checks import SCREENSHOTS, Scheme, check_app, fits_a_phone, page_errors
from tests.web.conftest import ADMIN, Desk, desk_server_in, open_app


@pytest.fixture(scope="module")
def desk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Overrides the session's desk server for this module: the last test tampers with it."""
    with desk_server_in(tmp_path_factory.mktemp("audit-desk")) as server:
        yield server


def audit(desk: Desk, **options: Any) -> Page:
    page = desk.logged_in(ADMIN, **options)
    open_app(page, "Audit")
    expect(page.get_by_role("table", name="Records").locator("tbody tr").first).to_be_visible()
    return page


def verify(page: Page) -> str:
    page.get_by_role("button", name="Verify the log").click()
    verdict = page.locator(".audit-verdict")
    expect(verdict).to_contain_text("verified", ignore_case=True)
    return verdict.inner_text()


def test_records_are_browsed_newest_first_and_by_kind(desk: Desk) -> None:
    page = audit(desk)
    errors = page_errors(page)
    table = page.get_by_role("table", name="Records")
    indices = [int(text) for text in table.locator("tbody tr td:first-child").all_inner_texts()]
    assert indices == sorted(indices, reverse=True) and indices[-1] == 0
    # Logging in is a request that changes something: it is a record, with its user.
    logins = table.locator("tbody tr", has_text="POST /api/session")
    expect(logins.first).to_contain_text(ADMIN)
    page.get_by_label("Kind").fill("change")
    page.get_by_label("Kind").press("Enter")
    expect(page.get_by_role("table", name="Records of kind change")).to_be_visible()
    kinds = page.locator(".audit-records tbody td:nth-child(3)").all_inner_texts()
    assert kinds and set(kinds) == {"change"}
    assert errors == []


def test_the_records_route_pages_newest_first_and_filters_by_kind(
    desk_server: Server, session_key: Callable[[Server, str], str]
) -> None:
    with httpx.Client(
        base_url=desk_server.url,
        headers={"Authorization": f"Bearer {session_key(desk_server, ADMIN)}"},
        timeout=HTTP_TIMEOUT,
    ) as http:
        seen: list[int] = []
        page = http.get("/api/audit/records", params={"limit": 2}).json()
        size = page["size"]
        while True:
            assert len(page["records"]) <= 2
            seen += [record["index"] for record in page["records"]]
            if page["next"] is None:
                break
            page = http.get("/api/audit/records", params={"limit": 2, "from": page["next"]}).json()
        assert seen == list(range(size - 1, -1, -1))  # every record once, newest first
        changes = http.get("/api/audit/records", params={"kind": "change", "limit": 500}).json()
        assert changes["records"] and {r["record"]["kind"] for r in changes["records"]} == {
            "change"
        }
        for wrong in ({"limit": 0}, {"limit": 501}, {"from": 0}, {"kind": ""}):
            assert http.get("/api/audit/records", params=wrong).status_code == 400, wrong


def test_verify_says_verified_and_the_export_passes_the_cli(desk: Desk, tmp_path: Path) -> None:
    page = audit(desk)
    errors = page_errors(page)
    assert verify(page).startswith("Verified:")
    with page.expect_download() as download:
        page.get_by_role("link", name="Export a bundle").click()
    bundle = tmp_path / download.value.suggested_filename
    download.value.save_as(bundle)
    assert bundle.name.startswith("blackroad-audit-") and bundle.suffix == ".zip"
    key = page.request.get("/api/audit/key")  # what the operator gives an inspector
    assert key.ok, key.text()
    checked = blackroad("audit", "verify", str(bundle), "--key", key.text().strip(), home=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("verified: ")
    assert errors == []


def test_at_phone_width_the_window_fills_the_screen(desk: Desk) -> None:
    fits_a_phone(audit(desk, width=390, height=800), "Audit")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_accessible_with_screenshots(desk: Desk, scheme: Scheme) -> None:
    page = audit(desk, color_scheme=scheme, bypass_csp=True)
    check_app(page, "Audit", "audit", scheme, verify)


def test_a_record_edited_in_the_database_fails_verification(desk: Desk) -> None:
    page = audit(desk, color_scheme="light")
    assert verify(page).startswith("Verified:")
    # Someone with the database file rewrites who made the first login.
    with sqlite3.connect(desk.server.home / "blackroad.db") as db:
        (index,) = db.execute(
            "SELECT idx FROM audit_records WHERE record LIKE ? ORDER BY idx LIMIT 1",
            (f'%"user":"{ADMIN}"%',),
        ).fetchone()
        db.execute(
            "UPDATE audit_records SET record = replace(record, ?, ?) WHERE idx = ?",
            (f'"user":"{ADMIN}"', '"user":"mallory"', index),
        )
    verdict = verify(page)
    assert verdict.startswith("NOT verified:")
    expect(page.locator(".audit-problems li").first).to_contain_text(f"record {index}")
    page.get_by_role("button", name="Maximise Audit").click()
    page.screenshot(path=SCREENSHOTS / "audit-tampered-light.png")
