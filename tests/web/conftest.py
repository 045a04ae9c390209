"""The desktop's test rig: one server that requires login, its users, and Debian's Chromium.

Every browser context a test opens records each request its pages make;
when the test ends, every one must have gone to the server itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from tests.support.server import HTTP_TIMEOUT, Server, blackroad, running_server

CHROMIUM = Path("/usr/bin/chromium")
# As root, in a machine with no network: no sandbox, no background connections to Google.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN, USER = "ada", "bob"
PASSWORDS = {ADMIN: "ada-desk-password-1", USER: "bob-desk-password-2"}
DESKTOP = (1280, 800)


@dataclass
class Desk:
    """The server, and the browser contexts opened on it with every URL their pages asked for."""

    server: Server
    browser: Browser
    requested: list[str] = field(default_factory=list)
    contexts: list[BrowserContext] = field(default_factory=list)

    def context(
        self,
        width: int = DESKTOP[0],
        height: int = DESKTOP[1],
        color_scheme: Literal["light", "dark"] | None = None,
        bypass_csp: bool = False,
    ) -> BrowserContext:
        context = self.browser.new_context(
            viewport={"width": width, "height": height},
            base_url=self.server.url,
            color_scheme=color_scheme,
            bypass_csp=bypass_csp,
        )
        context.on("request", lambda request: self.requested.append(request.url))
        self.contexts.append(context)
        return context

    def page(self, **options: Any) -> Page:
        """A new page in a new context (``options``: those of ``context``)."""
        return self.context(**options).new_page()

    def logged_in(self, user: str, **options: Any) -> Page:
        page = self.page(**options)
        log_in(page, user, PASSWORDS[user])
        page.get_by_role("navigation", name="Taskbar").wait_for()
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()
        self.contexts.clear()


def log_in(page: Page, user: str, password: str) -> None:
    page.goto("/")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def open_app(page: Page, title: str) -> None:
    page.get_by_role("button", name="BlackRoad").click()
    page.get_by_role("menuitem", name=title).click()
    page.get_by_role("dialog", name=title).wait_for()


@contextlib.contextmanager
def desk_server_in(home: Path, **settings: str) -> Iterator[Server]:
    """A server that requires login, with the admin ``ADMIN`` and the user ``USER``."""
    with running_server(home, auth="on", **settings) as server:
        for user, role in ((ADMIN, "admin"), (USER, "user")):
            added = blackroad(
                "users", "add", user, "--role", role, "--password-stdin",
                home=home, stdin=PASSWORDS[user] + "\n",
            )  # fmt: skip
            assert added.returncode == 0, added.stderr
        yield server


@pytest.fixture(scope="session")
def desk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with desk_server_in(tmp_path_factory.mktemp("desk")) as server:
        yield server


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: python3 scripts/dev.py test installs it")
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@pytest.fixture
def desk(desk_server: Server, browser: Browser) -> Iterator[Desk]:
    found = Desk(desk_server, browser)
    yield found
    found.close()
    here = urlsplit(desk_server.url).netloc
    foreign = {url for url in found.requested if urlsplit(url).netloc != here}
    assert not foreign, f"the page asked other hosts: {sorted(foreign)}"
    assert found.requested, "no request was recorded at all"


@pytest.fixture(scope="session")
def session_key() -> Callable[[Server, str], str]:
    """A user's session key from /api/login, for setting things up through the API."""

    def key(server: Server, user: str) -> str:
        answer = httpx.post(
            f"{server.url}/api/login",
            json={"name": user, "password": PASSWORDS[user]},
            timeout=HTTP_TIMEOUT,
        )
        assert answer.status_code == 201, answer.text
        secret: str = answer.json()["key"]
        return secret

    return key
