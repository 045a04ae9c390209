"""``blackroad up`` on an empty home creates the first admin and shows the credentials once."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from blackroad.identity.passwords import verify_password
from blackroad.store.database import Database
from blackroad.store.schema import User
from tests.support.server import HTTP_TIMEOUT, running_server


def test_first_start_creates_an_admin_whose_key_works_and_says_so_once(tmp_path: Path) -> None:
    with running_server(tmp_path, auth="on") as server:
        shown = server.log.read_text()
        key = re.search(r"API key:\s+(br-\S+)", shown)
        password = re.search(r"password: (\S+)", shown)
        assert key is not None and password is not None
        headers = {"Authorization": f"Bearer {key[1]}"}
        metrics = httpx.get(f"{server.url}/metrics", headers=headers, timeout=HTTP_TIMEOUT)
        assert metrics.status_code == 200  # admin
    with Database(tmp_path / "blackroad.db").session() as session:
        admin = session.query(User).one()
    assert (admin.name, admin.role) == ("admin", "admin")
    assert admin.password_hash and verify_password(password[1], admin.password_hash)
    assert password[1] not in admin.password_hash

    with running_server(tmp_path) as again:
        assert "Created the first admin" not in again.log.read_text()


def test_a_given_password_is_used_and_not_printed(tmp_path: Path) -> None:
    with running_server(tmp_path, admin_user="chief", admin_password="s3cret-pass") as server:
        shown = server.log.read_text()
    assert "Created the first admin, chief" in shown
    assert "s3cret-pass" not in shown
    with Database(tmp_path / "blackroad.db").session() as session:
        chief = session.query(User).one()
    assert chief.password_hash and verify_password("s3cret-pass", chief.password_hash)
