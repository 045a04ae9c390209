"""A document upload is refused before its body is read: no key, no right to write, no read.

FastAPI reads a route's declared form fields (spooling every file) before its
dependencies run. The upload route reads its form itself, after the key and
the base's permission are checked, so a caller who may not upload cannot
make the server take in 64 MB first. Each test sends only the headers of a
large upload and waits for the answer: it comes without the body.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.support.server import Server, running_server

KEY = "upload-auth-shared-key-0123456789"
DECLARED = 60 * 1024 * 1024


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("upload-auth"), api_key=KEY) as server:
        yield server


def answer_to_headers_alone(server: Server, path: str, authorization: str | None) -> int:
    """The status answered to an upload whose body is announced but never sent."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{server.port}",
        "Content-Type: multipart/form-data; boundary=x",
        f"Content-Length: {DECLARED}",
        *([f"Authorization: {authorization}"] if authorization else []),
        "",
        "",
    ]
    with socket.create_connection(("127.0.0.1", server.port), timeout=120) as sock:
        sock.sendall("\r\n".join(lines).encode())
        # Without the fix the server waits for the 60 MB that never come, and this times out.
        head = sock.recv(65536)
    return int(head.split(b" ", 2)[1])


def admin() -> httpx.Client:
    return httpx.Client(timeout=120, headers={"Authorization": f"Bearer {KEY}"})


def user_key(server: Server, name: str) -> str:
    with admin() as api:
        added = api.post(f"{server.url}/api/admin/users", json={"name": name})
        assert added.status_code == 201, added.text
        made = api.post(f"{server.url}/api/admin/keys", json={"user": name})
        assert made.status_code == 201, made.text
    key: str = made.json()["key"]
    return key


def new_base(server: Server, name: str) -> str:
    with admin() as api:
        base = api.post(f"{server.url}/api/kb", json={"name": name})
    assert base.status_code == 201, base.text
    return f"/api/kb/{base.json()['id']}/documents"


def test_an_upload_without_a_key_is_refused_before_its_body(keyed: Server) -> None:
    path = new_base(keyed, "owned")
    assert answer_to_headers_alone(keyed, path, None) == 401
    assert answer_to_headers_alone(keyed, path, "Bearer br-not-a-key-at-all") == 401


def test_an_upload_to_a_base_one_cannot_write_is_refused_before_its_body(keyed: Server) -> None:
    path = new_base(keyed, "not-yours")
    stranger = f"Bearer {user_key(keyed, 'stranger')}"
    # A base one cannot see is not found, as everywhere in /api/kb.
    assert answer_to_headers_alone(keyed, path, stranger) == 404
