"""The Fleet app: a real peer process added, seen up, drained, killed with SIGKILL, seen down,
removed; the control plane shown with the duties it leads.

Screenshots of the app, light and dark, are taken (see test_desktop.SCREENSHOTS).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from blackroad.store.leadership import DUTIES
from tests.conftest import SMOLLM2
from tests.support.server import Server, running_server
from tests.web.conftest import ADMIN, USER, Desk, open_app
from tests.web.test_desktop import SCREENSHOTS, _serious_violations

PEER = "harbour-pi"
# The probes run every 2 s (fleet_probe_seconds): a dead peer is red after a round or two.
PROBE_ROUNDS_MS = 30_000


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[Server]:
    """A second BlackRoad server (loopback, no key: anyone is its admin, as Ollama's clients)."""
    with running_server(tmp_path / "peer") as running:
        yield running


def csrf(page: Page) -> str:
    return {c["name"]: c["value"] for c in page.context.cookies()}["blackroad_csrf"]


def fleet_names(page: Page) -> list[str]:
    answer = page.request.get("/api/fleet")
    assert answer.ok, answer.text()
    return [node["name"] for node in answer.json()["nodes"]]


def test_a_peer_is_added_turns_red_when_killed_and_is_removed(desk: Desk, peer: Server) -> None:
    page = desk.logged_in(ADMIN, bypass_csp=True)
    page.on("dialog", lambda dialog: dialog.accept())
    open_app(page, "Fleet")
    this = page.locator("tbody tr").first
    expect(this).to_have_attribute("data-state", "up")
    expect(this.get_by_role("cell").nth(0)).to_contain_text("this node")
    form = page.get_by_role("region", name="Add a peer")
    form.get_by_label("Name").fill(PEER)
    form.get_by_label("Protocol").select_option("ollama")
    form.get_by_label("URL").fill(peer.url)
    form.get_by_role("button", name="Add node").click()
    row = page.locator(f"tr[data-node='{PEER}']")
    try:
        expect(row).to_have_attribute("data-state", "up")
        expect(row.locator(".state-badge")).to_have_text("Up")
        expect(row.locator(".fleet-models")).to_contain_text(SMOLLM2)
        expect(row.locator(".fleet-url")).to_have_text(peer.url)
        assert fleet_names(page)[1:] == [PEER]

        # Drained: still up, routed no new work, until undrained.
        page.get_by_role("button", name=f"Drain {PEER}").click()
        expect(row).to_have_attribute("data-draining", "true")
        expect(row.locator(".state-badge")).to_have_text("Up, draining")
        node = next(n for n in page.request.get("/api/fleet").json()["nodes"] if n["name"] == PEER)
        assert node["draining"] is True
        page.get_by_role("button", name=f"Drain {PEER}").click()
        expect(row).to_have_attribute("data-draining", "false")

        peer.process.send_signal(signal.SIGKILL)  # no goodbye, as in a crash or a pulled cable
        peer.process.wait(timeout=10)
        expect(row).to_have_attribute("data-state", "down", timeout=PROBE_ROUNDS_MS)
        badge = row.locator(".state-badge")
        expect(badge).to_have_attribute("data-state", "down")
        expect(badge).to_contain_text("Down")
        expect(page.get_by_role("status").filter(has_text=f"{PEER} is down.")).to_have_count(1)
        # What the row says is what the server says: the probes marked the node down.
        node = next(n for n in page.request.get("/api/fleet").json()["nodes"] if n["name"] == PEER)
        assert node["state"] == "down" or node["route"]["breaker"] == "open", node
        violations = _serious_violations(page)  # the red row keeps its contrast
        assert violations == [], json.dumps(violations, indent=1)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.get_by_role("button", name="Maximise Fleet").click()
        page.screenshot(path=SCREENSHOTS / "fleet-node-down-light.png")

        page.get_by_role("button", name=f"Remove {PEER}").click()
        expect(row).to_have_count(0)
        assert PEER not in fleet_names(page)
    finally:
        if PEER in fleet_names(page):  # the shared server must not keep a dead peer
            page.request.delete(f"/api/fleet/nodes/{PEER}", headers={"X-CSRF-Token": csrf(page)})


def test_the_servers_refusal_of_a_peer_is_shown(desk: Desk) -> None:
    page = desk.logged_in(ADMIN)
    open_app(page, "Fleet")
    form = page.get_by_role("region", name="Add a peer")
    form.get_by_label("Name").fill("nowhere")
    form.get_by_label("URL").fill("http://127.0.0.1:9")  # the discard port: nothing answers
    form.get_by_role("button", name="Add node").click()
    expect(form.get_by_role("alert")).to_contain_text("unreachable")
    assert fleet_names(page)[1:] == []


def test_the_control_plane_is_shown_ready_leading_every_duty(desk: Desk) -> None:
    page = desk.logged_in(ADMIN)
    open_app(page, "Fleet")
    (replica,) = page.request.get("/api/fleet").json()["control_planes"]
    section = page.get_by_role("region", name="Control planes")
    row = section.locator(f"tr[data-control-plane='{replica['name']}']")
    expect(row).to_have_attribute("data-state", "up")
    expect(row.locator(".state-badge")).to_have_text("Ready")
    expect(row.locator(".fleet-leads")).to_have_text(", ".join(DUTIES))
    expect(row).to_contain_text(replica["url"])
    expect(row).to_contain_text(f"sqlite {replica['database']['host']}")


def test_a_user_has_no_fleet_app_and_its_api_refuses_the_users_cookie(desk: Desk) -> None:
    page = desk.logged_in(USER)
    page.get_by_role("button", name="BlackRoad").click()
    apps = page.get_by_role("menu", name="Apps")
    expect(apps.get_by_role("menuitem", name="Chat")).to_be_visible()
    expect(apps.get_by_role("menuitem", name="Fleet")).to_have_count(0)
    page.goto("/#fleet")  # naming it in the URL does not open it either
    page.reload()
    expect(page.get_by_role("navigation", name="Taskbar")).to_be_visible()
    expect(page.get_by_role("dialog", name="Fleet")).to_have_count(0)
    for method, path in (("GET", "/api/fleet"), ("DELETE", f"/api/fleet/nodes/{PEER}")):
        status, body = page.evaluate(
            """async ([method, path]) => {
                const csrf = document.cookie.match(/blackroad_csrf=([^;]+)/)[1];
                const answer = await fetch(path, {method, headers: {"X-CSRF-Token": csrf}});
                return [answer.status, await answer.json()];
            }""",
            [method, path],
        )
        assert status == 403, (method, path, body)
        assert "admin" in body["error"]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_accessible_in_light_and_dark_with_screenshots(desk: Desk, scheme: str) -> None:
    page = desk.logged_in(ADMIN, color_scheme=scheme, bypass_csp=True)
    open_app(page, "Fleet")
    expect(page.locator("tbody tr").first).to_have_attribute("data-state", "up")
    violations = _serious_violations(page)
    assert violations == [], json.dumps(violations, indent=1)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"fleet-{scheme}.png")


def test_at_phone_width_nothing_but_the_table_scrolls_sideways(desk: Desk) -> None:
    page = desk.logged_in(ADMIN, width=390, height=800)
    open_app(page, "Fleet")
    expect(page.locator("tbody tr").first).to_have_attribute("data-state", "up")
    fleet = page.locator(".fleet")
    assert fleet.evaluate("(fleet) => fleet.scrollWidth <= fleet.clientWidth")
