"""The Knowledge app: a base made, a document uploaded with progress, listed, searched, deleted.

Screenshots of the app, light and dark, are taken (see test_desktop.SCREENSHOTS).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.web.conftest import ADMIN, USER, Desk, open_app
from tests.web.test_desktop import SCREENSHOTS, _serious_violations

HARBOUR = (
    "The harbour ledger of Porto Vecchio is kept by Ilse Brandt in the customs house.\n\n"
    "Ships entering after dusk report to the night clerk, who writes their tonnage in red ink."
)


def knowledge(page: Page) -> None:
    open_app(page, "Knowledge")
    expect(page.get_by_role("navigation", name="Knowledge bases")).to_be_visible()


def create_base(page: Page, name: str) -> None:
    sidebar = page.get_by_role("navigation", name="Knowledge bases")
    sidebar.get_by_label("Name").fill(name)
    sidebar.get_by_label("Description").fill("Port records")
    sidebar.get_by_role("button", name="Create").click()
    expect(page.get_by_role("dialog", name=f"Knowledge — {name}")).to_be_visible()


def progress_values(page: Page, label: str) -> list[float]:
    """Every value the progress bar labelled ``label`` took since ``watch_progress``."""
    values: list[float] = page.evaluate("(label) => window.progressSeen[label]", label)
    return values


def watch_progress(page: Page, label: str) -> None:
    """Record each value the bar takes (the app sets ``value``, which is reflected)."""
    page.get_by_label(label).evaluate(
        """(bar, label) => {
            window.progressSeen = window.progressSeen ?? {};
            const seen = window.progressSeen[label] = [];
            new MutationObserver(() => seen.push(bar.value))
                .observe(bar, { attributes: true, attributeFilter: ["value"] });
        }""",
        label,
    )


def base_id(page: Page) -> str:
    state: str = page.evaluate("location.hash")
    assert state.startswith("#knowledge="), state
    return state.removeprefix("#knowledge=")


def test_a_base_is_made_a_file_uploaded_with_progress_listed_searched_and_deleted(
    desk: Desk,
) -> None:
    page = desk.logged_in(USER)
    page.on("dialog", lambda dialog: dialog.accept())
    knowledge(page)
    create_base(page, "harbour-logs")
    ref = base_id(page)
    watch_progress(page, "Upload progress")
    page.get_by_label("Files").set_input_files(
        {"name": "ledger.txt", "mimeType": "text/plain", "buffer": HARBOUR.encode()}
    )
    page.get_by_role("button", name="Upload").click()
    status = page.locator(".kb-upload-status")
    expect(status).to_have_text("ledger.txt: added", timeout=120_000)
    bar = page.get_by_label("Upload progress")
    total = bar.evaluate("(bar) => bar.max")
    assert total > len(HARBOUR)  # the whole multipart body was counted
    seen = progress_values(page, "Upload progress")
    assert seen[0] == 0 and seen[-1] == total, seen
    documents = page.get_by_role("table", name="Documents of harbour-logs")
    row = documents.locator("tr[data-document]")
    expect(row).to_have_count(1)
    expect(row.get_by_role("rowheader")).to_have_text("ledger.txt")
    listed = page.request.get(f"/api/kb/{ref}/documents").json()["documents"]
    assert [(d["name"], d["chunks"] > 0) for d in listed] == [("ledger.txt", True)]
    expect(row.locator("td").nth(3)).to_have_text(str(listed[0]["chunks"]))

    search = page.get_by_role("search")
    search.get_by_label("Search the documents").fill("Who keeps the harbour ledger?")
    search.get_by_role("button", name="Search").click()
    hits = page.get_by_role("list", name="Search results").get_by_role("listitem")
    expect(hits.first).to_contain_text("1. ledger.txt")
    expect(hits.first.locator("blockquote")).to_contain_text("kept by Ilse Brandt")
    answer = page.request.post(
        f"/api/kb/{ref}/search",
        data={"query": "Who keeps the harbour ledger?"},
        headers={"X-CSRF-Token": csrf(page)},
    ).json()["results"]
    best = answer[0]
    rank = {None: "not found"}
    expect(hits.first.locator("dd")).to_have_text(
        [
            f"{best['score']:.4f}",
            rank.get(best["lexical_rank"], f"#{best['lexical_rank']}"),
            rank.get(best["vector_rank"], f"#{best['vector_rank']}"),
            f"{best['start']}–{best['end']}",
        ]
    )
    assert best["vector_rank"] == 1  # one passage: the nearest is the only one

    page.reload()  # the open base is the window's state
    expect(page.get_by_role("dialog", name="Knowledge — harbour-logs")).to_be_visible()
    page.get_by_role("button", name="Delete ledger.txt").click()
    expect(documents.get_by_text("No documents yet.")).to_be_visible()
    assert page.request.get(f"/api/kb/{ref}/documents").json()["documents"] == []
    page.get_by_role("button", name="Delete knowledge base").click()
    expect(page.get_by_role("dialog", name="Knowledge", exact=True)).to_be_visible()
    assert page.request.get(f"/api/kb/{ref}").status == 404
    assert base_id_or_none(page) is None


def base_id_or_none(page: Page) -> str | None:
    state: str = page.evaluate("location.hash")
    return state.removeprefix("#knowledge=") if state.startswith("#knowledge=") else None


def csrf(page: Page) -> str:
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    return cookies["blackroad_csrf"]


def test_errors_are_the_servers_and_a_base_shared_with_a_group_is_seen_by_its_members(
    desk: Desk,
) -> None:
    page = desk.logged_in(ADMIN)
    knowledge(page)
    sidebar = page.get_by_role("navigation", name="Knowledge bases")
    sidebar.get_by_label("Name").fill("12345")  # all digits could not be told from an id
    sidebar.get_by_role("button", name="Create").click()
    expect(sidebar.get_by_role("alert")).to_contain_text("must not be all digits")
    create_base(page, "crew-rota")
    ref = base_id(page)
    page.get_by_text("Sharing").click()
    page.get_by_label("Group").fill("harbour-crew")
    page.get_by_role("button", name="Share", exact=True).click()
    expect(page.locator(".kb-panel").get_by_role("alert")).to_contain_text(
        "'harbour-crew' not found"
    )
    token = {"X-CSRF-Token": csrf(page)}
    made = page.request.post(
        "/api/admin/groups", data={"name": "harbour-crew", "members": [USER]}, headers=token
    )
    assert made.status == 201, made.text()
    try:
        page.get_by_role("button", name="Share", exact=True).click()
        shares = page.get_by_role("list", name="Shared with")
        expect(shares).to_contain_text("harbour-crew: read")
        assert page.request.get(f"/api/kb/{ref}").json()["shares"] == [
            {"group": "harbour-crew", "permission": "read"}
        ]
        member = desk.logged_in(USER)
        knowledge(member)
        shared = member.get_by_role("navigation", name="Knowledge bases").locator(
            f"[data-kb='{ref}']"
        )
        expect(shared).to_have_text(f"crew-rota{ADMIN}'s, read")
        shared.click()  # a reader may search, not upload or delete
        expect(member.get_by_role("search")).to_be_visible()
        expect(member.get_by_role("button", name="Upload")).to_have_count(0)
        expect(member.get_by_role("button", name="Delete knowledge base")).to_have_count(0)
        page.get_by_role("button", name="Stop sharing with harbour-crew").click()
        expect(shares).to_have_text("Not shared: only you see it.")
    finally:
        assert page.request.delete("/api/admin/groups/harbour-crew", headers=token).ok
        assert page.request.delete(f"/api/kb/{ref}", headers=token).ok


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_accessible_in_light_and_dark_with_screenshots(desk: Desk, scheme: str) -> None:
    page = desk.logged_in(ADMIN, color_scheme=scheme, bypass_csp=True)
    knowledge(page)
    name = f"manuals-{scheme}"
    create_base(page, name)
    page.get_by_label("Files").set_input_files(
        {"name": "harbour.md", "mimeType": "text/markdown", "buffer": HARBOUR.encode()}
    )
    page.get_by_role("button", name="Upload").click()
    expect(page.locator(".kb-upload-status")).to_have_text("harbour.md: added", timeout=120_000)
    page.get_by_label("Search the documents").fill("night clerk tonnage")
    page.get_by_role("search").get_by_role("button", name="Search").click()
    expect(page.locator(".kb-hit").first).to_contain_text("red ink")
    violations: list[dict[str, Any]] = _serious_violations(page)
    assert violations == [], json.dumps(violations, indent=1)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.get_by_role("dialog", name=f"Knowledge — {name}").get_by_role(
        "button", name="Maximise Knowledge"
    ).click()
    page.screenshot(path=SCREENSHOTS / f"knowledge-{scheme}.png")
    ref = base_id(page)
    assert page.request.delete(f"/api/kb/{ref}", headers={"X-CSRF-Token": csrf(page)}).ok


def test_at_phone_width_nothing_but_a_table_scrolls_sideways(desk: Desk) -> None:
    page = desk.logged_in(USER, width=390, height=800)
    knowledge(page)
    create_base(page, "pocket-notes")
    body = page.locator(".window-body")
    assert body.evaluate("(body) => body.scrollWidth <= body.clientWidth")
    main = page.locator(".kb-main")
    assert main.evaluate("(main) => main.scrollWidth <= main.clientWidth")
    assert page.request.delete(f"/api/kb/{base_id(page)}", headers={"X-CSRF-Token": csrf(page)}).ok
