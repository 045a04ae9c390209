"""Serving the desktop: the page for browsers only, media types, caching, CSP, no way out of it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from blackroad.web.vendor import SOURCE_MODULES, VENDOR_FILES, installed
from tests.support.server import HTTP_TIMEOUT, Server, running_server

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


@pytest.fixture(scope="module")
def http(desk_server: Server) -> httpx.Client:
    return httpx.Client(base_url=desk_server.url, timeout=30)


def test_browsers_get_the_desktop_and_api_clients_ollamas_answer(http: httpx.Client) -> None:
    page = http.get("/", headers=HTML)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/desktop/shell.js">' in page.text
    assert page.headers["vary"] == "Accept"
    for accept in (None, "*/*", "application/json"):
        plain = http.get("/", headers={"Accept": accept} if accept else {})
        assert (plain.status_code, plain.text) == (200, "Ollama is running")


def test_every_desktop_response_has_a_strict_policy(http: httpx.Client) -> None:
    for path in ("/", "/desktop/shell.js", "/desktop/desktop.css", "/desktop/apps/chat.js"):
        answer = http.get(path, headers=HTML)
        policy = dict(
            part.strip().split(" ", 1)
            for part in answer.headers["content-security-policy"].split(";")
        )
        assert policy["default-src"] == policy["script-src"] == policy["connect-src"] == "'self'"
        assert policy["frame-ancestors"] == policy["object-src"] == "'none'"
        assert "unsafe-inline" not in answer.headers["content-security-policy"]
        assert answer.headers["x-content-type-options"] == "nosniff"


def test_media_types_and_caching(http: httpx.Client) -> None:
    for path, media_type in (
        ("/desktop/shell.js", "text/javascript"),
        ("/desktop/apps/chat.js", "text/javascript"),
        ("/desktop/desktop.css", "text/css"),
        ("/desktop/icon.svg", "image/svg+xml"),
    ):
        answer = http.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["content-type"].split(";")[0] == media_type
        assert answer.headers["cache-control"] == "no-cache"
        again = http.get(path, headers={"If-None-Match": answer.headers["etag"]})
        assert (again.status_code, again.content) == (304, b"")


def test_vendor_files_come_from_node_modules_by_allowlist_and_version(http: httpx.Client) -> None:
    vendor = http.get("/desktop/manifest.json").json()["vendor"]
    assert set(vendor) == set(VENDOR_FILES), "npm ci in web/ installs every vendor file"
    for name, url in vendor.items():
        answer = http.get(url)
        assert answer.status_code == 200, url
        assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
        wanted = VENDOR_FILES[name]
        assert answer.content == (SOURCE_MODULES / wanted.package / wanted.path).read_bytes()
    marked = installed(SOURCE_MODULES)["marked.js"]
    assert http.get("/desktop/vendor/0.0.1/marked.js").status_code == 404  # another version
    assert http.get(f"/desktop/vendor/{marked.version}/package.json").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/desktop/%2e%2e/routes.py",
        "/desktop/..%2f..%2fconfig.py",
        "/desktop/apps/%2e%2e/%2e%2e/vendor.py",
        "/desktop/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/desktop/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/desktop/%2fetc%2fpasswd",
        "/desktop/index.html%00.js",
        "/desktop/apps",
        "/desktop/nothing.js",
    ],
)
def test_nothing_outside_the_static_files_is_served(http: httpx.Client, path: str) -> None:
    answer = http.get(http.base_url.copy_with(raw_path=path.encode()))
    assert answer.status_code == 404, answer.text
    assert "error" in answer.json()


def test_without_node_modules_the_desktop_runs_and_the_log_says_so(tmp_path: Path) -> None:
    with running_server(tmp_path / "home", web_modules=str(tmp_path / "nothing")) as server:
        manifest = httpx.get(f"{server.url}/desktop/manifest.json", timeout=HTTP_TIMEOUT).json()
        assert manifest["vendor"] == {}
        assert "/desktop/apps/chat.js" in manifest["apps"]
        assert httpx.get(server.url, headers=HTML, timeout=HTTP_TIMEOUT).status_code == 200
        log = server.log.read_text()
    assert "npm ci" in log and "plain text" in log
