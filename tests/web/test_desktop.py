"""The desktop in Chromium: logging in, the windows, phone width, admin apps, accessibility.

Screenshots of the desktop and of Chat, light and dark, are taken (see SCREENSHOTS).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import FloatRect, Page, expect

from blackroad.api.auth import CSRF_COOKIE, SESSION_COOKIE
from tests.web.conftest import ADMIN, PASSWORDS, USER, Desk, log_in, open_app

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"
# A test run leaves the tree as it found it: the README's screenshots are
# retaken only when asked, with BLACKROAD_SCREENSHOTS=docs/screenshots.
SCREENSHOTS = ROOT / (
    os.environ.get("BLACKROAD_SCREENSHOTS") or Path(tempfile.gettempdir(), "blackroad-screenshots")
)
# A stored conversation with Markdown and code, for the screenshots: shown as the server keeps it.
SHOWCASE = {
    "title": "Parsing a log line",
    "messages": [
        {"role": "user", "content": "How do I split a log line into its fields in Python?"},
        {
            "role": "assistant",
            "content": (
                "Use **`str.split`** with a limit, so the message keeps its spaces:\n\n"
                "```python\ndef fields(line: str) -> dict[str, str]:\n"
                '    when, level, message = line.split(" ", 2)\n'
                '    return {"when": when, "level": level, "message": message}\n```\n\n'
                "- `when`: the timestamp\n- `level`: `INFO`, `WARNING`, ...\n"
            ),
        },
    ],
}


def test_a_wrong_password_is_shown_and_the_right_one_opens_the_desktop(desk: Desk) -> None:
    page = desk.page()
    log_in(page, USER, "not-the-password")
    expect(page.get_by_role("alert")).to_have_text("Incorrect user name or password.")
    expect(page.get_by_role("navigation", name="Taskbar")).to_be_hidden()
    page.get_by_label("Password").fill(PASSWORDS[USER])
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("navigation", name="Taskbar")).to_be_visible()
    expect(page.locator("#user-button")).to_have_text(USER)
    # Chromium keeps Secure cookies from http://127.0.0.1, and the page cannot read the key.
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies[SESSION_COOKIE]["secure"] and cookies[SESSION_COOKIE]["httpOnly"]
    assert cookies[SESSION_COOKIE]["sameSite"] == "Strict"
    readable = page.evaluate("document.cookie")
    assert CSRF_COOKIE in readable and SESSION_COOKIE not in readable
    # Logging out ends the session: the login form again, and after a reload too.
    page.locator("#user-button").click()
    page.get_by_role("menuitem", name="Log out").click()
    expect(page.get_by_label("User name")).to_be_visible()
    page.reload()
    expect(page.get_by_label("User name")).to_be_visible()


def _box(page: Page, selector: str) -> FloatRect:
    box = page.locator(selector).bounding_box()
    assert box is not None
    return box


def test_windows_open_move_resize_minimise_maximise_and_close(desk: Desk) -> None:
    page = desk.logged_in(USER)
    open_app(page, "Chat")
    window = page.get_by_role("dialog", name="Chat")
    start = _box(page, ".window")
    title = _box(page, ".titlebar")
    page.mouse.move(title["x"] + 40, title["y"] + title["height"] / 2)
    page.mouse.down()
    page.mouse.move(title["x"] + 140, title["y"] + title["height"] / 2 + 60, steps=4)
    page.mouse.up()
    moved = _box(page, ".window")
    assert (moved["x"] - start["x"], moved["y"] - start["y"]) == (100, 60)
    handle = _box(page, ".resize-handle")
    page.mouse.move(handle["x"] + 8, handle["y"] + 8)
    page.mouse.down()
    page.mouse.move(handle["x"] - 92, handle["y"] - 42, steps=4)
    page.mouse.up()
    resized = _box(page, ".window")
    assert (moved["width"] - resized["width"], moved["height"] - resized["height"]) == (100, 50)
    page.get_by_role("button", name="Maximise Chat").click()
    assert _box(page, ".window") == _box(page, "#desktop")
    page.get_by_role("button", name="Maximise Chat").click()
    assert _box(page, ".window") == resized
    page.get_by_role("button", name="Minimise Chat").click()
    expect(window).to_be_hidden()
    taskbar_entry = page.get_by_role("list", name="Open windows").get_by_role("button", name="Chat")
    expect(taskbar_entry).to_have_attribute("aria-pressed", "false")
    taskbar_entry.click()
    expect(window).to_be_visible()
    expect(taskbar_entry).to_have_attribute("aria-pressed", "true")
    page.get_by_role("button", name="Close Chat").click()
    expect(window).to_have_count(0)
    expect(taskbar_entry).to_have_count(0)
    assert page.evaluate("location.hash") == ""


def test_the_keyboard_moves_and_resizes_a_window(desk: Desk) -> None:
    page = desk.logged_in(USER)
    open_app(page, "Chat")
    expect(page.get_by_role("textbox", name="Message")).to_be_focused()  # the app is ready
    start = _box(page, ".window")
    grip = page.get_by_role("button", name="Move Chat")
    grip.focus()
    for key in ("ArrowRight", "ArrowRight", "ArrowDown"):
        page.keyboard.press(key)
    moved = _box(page, ".window")
    assert (moved["x"] - start["x"], moved["y"] - start["y"]) == (32, 16)
    page.keyboard.press("Shift+ArrowLeft")
    page.keyboard.press("Shift+ArrowUp")
    resized = _box(page, ".window")
    assert (moved["width"] - resized["width"], moved["height"] - resized["height"]) == (16, 16)
    assert (resized["x"], resized["y"]) == (moved["x"], moved["y"])
    expect(grip).to_be_focused()


def test_the_keyboard_reaches_the_launcher_and_the_windows(desk: Desk) -> None:
    page = desk.logged_in(USER)
    page.keyboard.press("Alt+KeyA")
    expect(page.get_by_role("menu", name="Apps")).to_be_visible()
    expect(page.get_by_role("menuitem", name="Chat")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.get_by_role("menu", name="Apps")).to_be_hidden()
    expect(page.get_by_role("button", name="BlackRoad")).to_be_focused()
    page.keyboard.press("Enter")  # the focused launcher button opens the menu
    page.keyboard.press("Enter")  # and Enter on its item opens the app
    chat = page.get_by_role("dialog", name="Chat")
    expect(chat).to_be_visible()
    expect(page.get_by_role("textbox", name="Message")).to_be_focused()
    page.keyboard.press("Tab")  # Tab moves through the window's controls
    expect(page.get_by_role("button", name="Send")).to_be_focused()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    expect(page.get_by_role("spinbutton", name="Max tokens")).to_be_focused()
    # A second window, then Alt+W brings the windows forward in turn.
    page.keyboard.press("Alt+KeyA")
    page.get_by_role("menuitem", name="Knowledge").press("Enter")
    knowledge = page.get_by_role("dialog", name="Knowledge")
    expect(knowledge).to_have_class(re.compile(r"\bactive\b"))
    page.keyboard.press("Alt+KeyW")
    expect(chat).to_have_class(re.compile(r"\bactive\b"))
    expect(knowledge).not_to_have_class(re.compile(r"\bactive\b"))
    page.keyboard.press("Alt+KeyW")
    expect(knowledge).to_have_class(re.compile(r"\bactive\b"))


def test_at_phone_width_windows_fill_the_screen(desk: Desk) -> None:
    page = desk.logged_in(USER, width=390, height=800)
    open_app(page, "Chat")
    assert _box(page, ".window") == _box(page, "#desktop")
    taskbar = _box(page, "#taskbar")
    assert taskbar["y"] + taskbar["height"] == 800
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def _app_flags(page: Page) -> dict[str, bool]:
    """Each app's title and admin flag, read from the modules the server lists."""
    flags: dict[str, bool] = page.evaluate(
        """async () => {
            const { apps } = await (await fetch("/desktop/manifest.json")).json();
            const found = {};
            for (const url of apps) {
                const app = (await import(url)).default;
                found[app.title] = Boolean(app.admin);
            }
            return found;
        }"""
    )
    return flags


@pytest.mark.parametrize("user", [USER, ADMIN])
def test_admin_apps_are_listed_for_admins_only(desk: Desk, user: str) -> None:
    page = desk.logged_in(user)
    flags = _app_flags(page)
    page.get_by_role("button", name="BlackRoad").click()
    listed = page.get_by_role("menu", name="Apps").get_by_role("menuitem").all_inner_texts()
    expected = [title for title, admin in flags.items() if user == ADMIN or not admin]
    assert sorted(listed) == sorted(expected)
    assert "Chat" in listed
    page.keyboard.press("Escape")
    # The desktop's icons are the same apps, and one click opens one.
    icons = page.get_by_role("list", name="Apps on the desktop").get_by_role("button")
    assert sorted(icons.all_inner_texts()) == sorted(f"{t[0]}\n{t}" for t in expected)
    icons.filter(has_text="Chat").click()
    page.get_by_role("dialog", name="Chat").wait_for()
    # And the server refuses the user's cookie on an admin API, in its error format.
    status, body = page.evaluate(
        """async () => {
            const answer = await fetch("/api/admin/users");
            return [answer.status, await answer.json()];
        }"""
    )
    assert status == (403 if user == USER else 200)
    if user == USER:
        assert "admin" in body["error"]


def _serious_violations(page: Page) -> list[dict[str, Any]]:
    page.add_script_tag(path=str(AXE))
    result: dict[str, Any] = page.evaluate("async () => await axe.run(document)")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_accessible_in_light_and_dark_with_screenshots(desk: Desk, scheme: str) -> None:
    # bypass_csp: axe-core is injected as an inline script, which the desktop's CSP forbids.
    page = desk.logged_in(ADMIN, color_scheme=scheme, bypass_csp=True)
    expect(page.locator("html")).to_have_attribute("data-effective-theme", scheme)
    login_violations = _serious_violations(page)
    assert login_violations == [], json.dumps(login_violations, indent=1)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"desktop-{scheme}.png")
    made = page.evaluate(
        """async (body) => {
            const csrf = document.cookie.match(/blackroad_csrf=([^;]+)/)[1];
            const answer = await fetch("/api/conversations", {
                method: "POST", body: JSON.stringify(body),
                headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
            });
            return answer.json();
        }""",
        SHOWCASE,
    )
    page.goto(f"/#chat={made['id']}")
    page.reload()  # what the URL names is opened on load
    expect(page.locator(".message.assistant pre code.hljs")).to_be_visible()
    expect(page.get_by_role("dialog", name=f"Chat — {SHOWCASE['title']}")).to_be_visible()
    violations = _serious_violations(page)
    assert violations == [], json.dumps(violations, indent=1)
    page.screenshot(path=SCREENSHOTS / f"chat-{scheme}.png")


def test_the_theme_toggle_overrides_the_system(desk: Desk) -> None:
    page = desk.logged_in(USER, color_scheme="light")
    html = page.locator("html")
    expect(html).to_have_attribute("data-effective-theme", "light")
    toggle = page.get_by_role("button", name="Theme: auto")
    toggle.click()  # auto -> light
    toggle = page.get_by_role("button", name="Theme: light")
    toggle.click()  # light -> dark
    expect(html).to_have_attribute("data-effective-theme", "dark")
    page.reload()  # a cosmetic choice, kept by the browser
    expect(page.locator("html")).to_have_attribute("data-effective-theme", "dark")
