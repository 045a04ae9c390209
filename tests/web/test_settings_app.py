"""The Settings app: users, groups, keys (the secret shown once) and limits through /api/admin;
and what a plain user gets of the admin apps: nothing in the launcher, nothing from the URL,
403 from their API with the cookie session."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.support.server import HTTP_TIMEOUT
from tests.web.app_checks import Scheme, check_app, fits_a_phone, page_errors
from tests.web.conftest import ADMIN, USER, Desk, open_app

NEWCOMER, NEWCOMER_PASSWORD = "carol", "carol-desk-password-3"
ADMIN_APPS = ("Settings", "Audit")


def settings(desk: Desk, **options: Any) -> Page:
    page = desk.logged_in(ADMIN, **options)
    open_app(page, "Settings")
    expect(page.get_by_role("table", name="Users")).to_contain_text(ADMIN)
    return page


def me(desk: Desk, key: str) -> httpx.Response:
    return httpx.get(
        f"{desk.server.url}/api/me",
        headers={"Authorization": f"Bearer {key}"},
        timeout=HTTP_TIMEOUT,
    )


def test_a_user_and_a_key_are_made_the_key_shown_once_then_revoked(desk: Desk) -> None:
    page = settings(desk)
    errors = page_errors(page)
    add = page.get_by_role("form", name="Add a user")
    add.get_by_label("Name").fill(NEWCOMER)
    add.get_by_label("Password").fill(NEWCOMER_PASSWORD)
    add.get_by_role("button", name="Add user").click()
    users = page.get_by_role("table", name="Users")
    expect(users.locator("tr", has_text=NEWCOMER)).to_contain_text("active")
    # A second user of the same name: the server's refusal, shown by the form.
    add.get_by_label("Name").fill(NEWCOMER)
    add.get_by_role("button", name="Add user").click()
    expect(add.get_by_role("alert")).not_to_be_empty()

    page.get_by_role("tab", name="Keys").click()
    create = page.get_by_role("form", name="Create a key")
    create.get_by_label("User").select_option(NEWCOMER)
    create.get_by_label("Key name").fill("ci")
    create.get_by_role("button", name="Create key").click()
    expect(page.get_by_role("alert").filter(has_text="shown this once")).to_be_visible()
    secret = page.get_by_label("The new key").input_value()
    assert me(desk, secret).json()["user"] == NEWCOMER
    expect(page.get_by_role("button", name="Copy")).to_be_focused()
    page.get_by_role("button", name="Done").click()
    expect(page.get_by_label("The new key")).to_have_count(0)
    page.reload()  # the hash reopens the Keys tab; the server never gives the secret again
    # By its prefix: a name such as "ci" may also be part of another key's random prefix.
    row = page.get_by_role("table", name="Keys").locator("tr", has_text=secret[:12])
    expect(row).to_contain_text("ci")
    expect(row).to_contain_text("active")
    assert secret not in page.content()
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Revoke").click()
    expect(row).to_contain_text("revoked")
    assert me(desk, secret).status_code == 401

    page.get_by_role("tab", name="Limits").click()
    limits = page.get_by_role("form", name="Limits")
    limits.get_by_label("Applies to").select_option(f"user:{NEWCOMER}")
    limits.get_by_label("Requests a minute").fill("7")
    limits.get_by_role("button", name="Save limits").click()
    expect(page.get_by_text("Limits saved.")).to_be_visible()
    held = page.request.get(f"/api/admin/users/{NEWCOMER}").json()
    assert held["limits"]["rpm"] == 7 and held["limits"]["tpm"] is None

    page.get_by_role("tab", name="Groups").click()
    group = page.get_by_role("form", name="Add a group")
    group.get_by_label("Name").fill("night-shift")
    group.get_by_label("Members").fill(NEWCOMER)
    group.get_by_role("button", name="Add group").click()
    expect(
        page.get_by_role("table", name="Groups").locator("tr", has_text="night-shift")
    ).to_contain_text(NEWCOMER)

    page.get_by_role("tab", name="Users").click()
    page.get_by_role("button", name=f"Disable {NEWCOMER}").click()
    expect(users.locator("tr", has_text=NEWCOMER)).to_contain_text("disabled")
    login = httpx.post(
        f"{desk.server.url}/api/login",
        json={"name": NEWCOMER, "password": NEWCOMER_PASSWORD},
        timeout=HTTP_TIMEOUT,
    )
    assert login.status_code == 401, login.text
    assert errors == []


def test_a_plain_user_cannot_open_an_admin_app_nor_reach_its_api(desk: Desk) -> None:
    page = desk.logged_in(USER)
    page.get_by_role("button", name="BlackRoad").click()
    listed = page.get_by_role("menu", name="Apps").get_by_role("menuitem").all_inner_texts()
    assert "Agents" in listed and "Usage" in listed
    assert not set(ADMIN_APPS) & set(listed)
    page.goto("/#settings=keys,audit,usage")
    page.reload()
    expect(page.get_by_role("dialog", name="Usage")).to_be_visible()  # the URL's other app opens
    for title in ADMIN_APPS:
        expect(page.get_by_role("dialog", name=title)).to_have_count(0)
    answers = page.evaluate(
        """async () => {
            const csrf = document.cookie.match(/blackroad_csrf=([^;]+)/)[1];
            const headers = {"Content-Type": "application/json", "X-CSRF-Token": csrf};
            const calls = [
                ["GET", "/api/admin/users"], ["GET", "/api/admin/keys"],
                ["POST", "/api/admin/users", {name: "eve", role: "admin"}],
                ["GET", "/api/audit/records"], ["POST", "/api/audit/verify"],
                ["GET", "/api/audit/export"],
            ];
            const found = [];
            for (const [method, path, body] of calls) {
                const sent = body && JSON.stringify(body);
                const answer = await fetch(path, {method, headers, body: sent});
                found.push([path, answer.status, (await answer.json()).error]);
            }
            return found;
        }"""
    )
    for path, status, error in answers:
        assert status == 403 and "admin" in error, (path, status, error)


@pytest.mark.parametrize("tab", ["Users", "Groups", "Keys", "Limits"])
def test_at_phone_width_the_window_fills_the_screen(desk: Desk, tab: str) -> None:
    page = settings(desk, width=390, height=800)
    page.get_by_role("tab", name=tab).click()
    expect(page.get_by_role("tabpanel", name=tab)).to_be_visible()
    fits_a_phone(page, "Settings")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_accessible_with_screenshots(desk: Desk, scheme: Scheme) -> None:
    page = settings(desk, color_scheme=scheme, bypass_csp=True)
    check_app(page, "Settings", "settings", scheme, lambda _: None)
