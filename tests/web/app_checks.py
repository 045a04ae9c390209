"""What every desktop app's tests check the same way: axe-core in light and dark, a screenshot.

Pages opened here bypass the CSP (axe-core is injected as an inline
script); the apps' own flows are tested in pages that keep it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Literal

from playwright.sync_api import Page, expect

from tests.web.test_desktop import SCREENSHOTS, _serious_violations

__all__ = ["SCREENSHOTS", "Scheme", "check_app", "page_errors"]

Scheme = Literal["light", "dark"]


def check_app(
    page: Page, title: str, screenshot: str, scheme: Scheme, ready: Callable[[Page], object]
) -> None:
    """``page`` shows app ``title`` with no serious axe violation, and is saved as a screenshot.

    ``ready`` waits until the app shows what the screenshot should: its data, not a spinner.
    """
    expect(page.locator("html")).to_have_attribute("data-effective-theme", scheme)
    expect(page.get_by_role("dialog", name=title).first).to_be_visible()
    ready(page)
    page.get_by_role("button", name=f"Maximise {title}").click()
    violations = _serious_violations(page)
    assert violations == [], json.dumps(violations, indent=1)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{screenshot}-{scheme}.png")


def page_errors(page: Page) -> list[str]:
    """The uncaught errors of ``page`` from now on (a list that fills as they happen)."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def fits_a_phone(page: Page, title: str) -> None:
    """At phone width app ``title`` fills the screen, and only its tables scroll sideways."""
    window = page.get_by_role("dialog", name=title).first
    expect(window).to_be_visible()
    assert window.bounding_box() == page.locator("#desktop").bounding_box()
    width = page.evaluate("innerWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    body = window.locator(".window-body")
    assert body.evaluate("b => b.scrollWidth <= b.clientWidth"), "the window scrolls sideways"
