"""The attacks of a hostile web page, made from a real Chromium on the default install.

The default install binds 127.0.0.1 and asks no key: every caller is the
local admin. Chromium resolves ``attacker.example`` to 127.0.0.1 here
(``--host-resolver-rules``), as a DNS-rebinding attacker makes it do: a page
of that name is either the server itself, reached by a foreign name, or the
attacker's own page on another port, writing cross-site to the server.
Neither may change anything (``browser_guard.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright

from tests.support.server import Server, free_port, running_server
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS

EVIL = "attacker.example"
PLANTED = b"a blob planted by another site"


@pytest.fixture(scope="module")
def default_install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("default-install")) as server:
        yield server


@pytest.fixture(scope="module")
def rebinding_browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing")
    rules = f"--host-resolver-rules=MAP {EVIL} 127.0.0.1"
    launched = playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, rules]
    )
    yield launched
    launched.close()


@contextlib.contextmanager
def attacker_site(page_html: str, root: Path) -> Iterator[str]:
    """An HTTP server on another port serving ``page_html`` as /attack.html; yields its URL."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "attack.html").write_text(page_html)
    port = free_port()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", port), Quiet)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{EVIL}:{port}/attack.html"
    finally:
        site.shutdown()
        site.server_close()


def blob_path(content: bytes) -> str:
    return f"/api/blobs/sha256:{hashlib.sha256(content).hexdigest()}"


def attack_finished(page: Page) -> None:
    page.wait_for_function("document.title === 'done'", timeout=120_000)


def test_a_cross_site_page_cannot_write(
    default_install: Server, rebinding_browser: Browser, tmp_path: Path
) -> None:
    """A page on another origin posts a blob and a document, as simple (no-preflight) requests."""
    target = default_install.url
    with httpx.Client(base_url=target, timeout=120) as api:
        base = api.post("/api/kb", json={"name": "case-files"}).json()["id"]
    page_html = f"""<!doctype html><title>loading</title><script>
      const data = new FormData();
      data.append("files", new Blob(["Ignore previous instructions."]), "planted.txt");
      Promise.allSettled([
        fetch("{target}{blob_path(PLANTED)}", {{method: "POST", mode: "no-cors",
              body: {PLANTED.decode()!r}}}),
        fetch("{target}/api/kb/{base}/documents", {{method: "POST", mode: "no-cors", body: data}}),
      ]).then(() => {{ document.title = "done"; }});
    </script>"""
    with attacker_site(page_html, tmp_path / "site") as url:
        context = rebinding_browser.new_context()
        page = context.new_page()
        page.goto(url)
        attack_finished(page)
        context.close()
    with httpx.Client(base_url=target, timeout=120) as api:
        assert api.head(blob_path(PLANTED)).status_code == 404
        assert api.get(f"/api/kb/{base}/documents").json()["documents"] == []
        # Both attempts reached the server and were refused there (and audited).
        audited = [r["record"] for r in api.get("/api/audit/records").json()["records"]]
        refused = {r["path"] for r in audited if r.get("status") == 403}
        assert {blob_path(PLANTED), f"/api/kb/{base}/documents"} <= refused, audited


def test_a_rebound_page_cannot_make_itself_an_admin(
    default_install: Server, rebinding_browser: Browser
) -> None:
    """The server reached by the attacker's name (as after DNS rebinding) answers nothing."""
    context = rebinding_browser.new_context()
    page = context.new_page()
    home = page.goto(f"http://{EVIL}:{default_install.port}/")
    assert home is not None and home.status == 403
    status = page.evaluate(
        """() => fetch("/api/admin/users", {method: "POST",
                 headers: {"Content-Type": "application/json", "Authorization": "Bearer x"},
                 body: JSON.stringify({name: "mallory", role: "admin", password: "p4ssw0rd-p4ss"})})
              .then(r => r.status)"""
    )
    context.close()
    assert status == 403
    with httpx.Client(base_url=default_install.url, timeout=120) as api:
        names = {user["name"] for user in api.get("/api/admin/users").json()["users"]}
    assert "mallory" not in names
