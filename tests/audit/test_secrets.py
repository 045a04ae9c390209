"""No secret enters the audit log, the request log or the server's log, in any form.

For every route that takes a secret (a password, a key, a join token, a
node's credential, an MCP server's header and environment values), in both
audit modes, a request carries a secret made up for it. Then the database
(its raw files, or where the route keeps the secret by design, a vacuumed
copy once the thing holding it is removed), the inspector's bundle, the
records ``/api/audit/records`` lists and the server's log file are searched
for it, and no digest the log holds may be the SHA-256 of a body that held
it. Real server processes, real requests.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sqlite3
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from blackroad.audit.log import canonical
from blackroad.store import sqlite
from tests.support.server import Server, blackroad, running_server

MODES = ("digests", "full")
TIMEOUT = httpx.Timeout(120.0)
CAPABILITIES = {"arch": "x86_64", "cores": 1, "simd": [], "accelerators": []}
STATS = {"loaded": [], "active": 0, "queued": 0, "free_memory_bytes": None,
         "decode_tokens_per_second": {}, "capabilities": CAPABILITIES, "heartbeat_seconds": 2.0,
         "num_ctx": 4096, "num_seq": 4}  # fmt: skip


@pytest.fixture(scope="module", params=MODES)
def audited(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, str]]:
    """A server auditing in one of the modes, and the mode."""
    mode = request.param
    home = tmp_path_factory.mktemp(f"secrets-{mode}")
    with running_server(home, audit_texts=mode, audit_checkpoint_seconds="3600") as server:
        yield server, mode


def secret() -> str:
    """A secret no other test sends, and that only the name of its field marks as one."""
    return f"Zq{uuid.uuid4().hex}"


@dataclass
class Sent:
    """What a case sent: the secrets in it, and every body that held one."""

    secrets: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    # The app keeps these secrets itself (a peer's key, an MCP server's headers):
    # the database is searched once what holds them is removed, as a vacuumed copy.
    kept_by_design: bool = False

    def send(
        self,
        http: httpx.Client,
        method: str,
        path: str,
        body: Any,
        content_type: str = "application/json",
        **headers: str,
    ) -> httpx.Response:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        if any(s.encode() in raw for s in self.secrets):
            self.bodies.append(raw)
        return http.request(
            method, path, content=raw, headers={"content-type": content_type, **headers}
        )


def _user(http: httpx.Client, sent: Sent, prefix: str) -> tuple[str, str]:
    """A new user made through the API, with a password the logs must never hold."""
    name, password = f"{prefix}-{uuid.uuid4().hex[:8]}", secret()
    sent.secrets.append(password)
    made = sent.send(http, "POST", "/api/admin/users", {"name": name, "password": password})
    assert made.status_code == 201, made.text
    return name, password


def _login(http: httpx.Client, sent: Sent, server: Server) -> None:
    name, password = _user(http, sent, "login")
    logged_in = sent.send(http, "POST", "/api/login", {"name": name, "password": password})
    assert logged_in.status_code == 201, logged_in.text
    wrong = secret()
    sent.secrets.append(wrong)
    refused = sent.send(http, "POST", "/api/login", {"name": name, "password": wrong})
    assert refused.status_code == 401, refused.text


def _session(http: httpx.Client, sent: Sent, server: Server) -> None:
    name, password = _user(http, sent, "session")
    opened = sent.send(http, "POST", "/api/session", {"name": name, "password": password})
    assert opened.status_code == 201, opened.text


def _users(http: httpx.Client, sent: Sent, server: Server) -> None:
    name, first, second = f"user-{uuid.uuid4().hex[:8]}", secret(), secret()
    sent.secrets += [first, second]
    made = sent.send(http, "POST", "/api/admin/users", {"name": name, "password": first})
    assert made.status_code == 201, made.text
    changed = sent.send(http, "PATCH", f"/api/admin/users/{name}", {"password": second})
    assert changed.status_code == 200, changed.text


def _refused_bodies(http: httpx.Client, sent: Sent, server: Server) -> None:
    """Bodies refused with an error that could quote them, or that cannot be parsed at all."""
    long, typed, cut, form = secret(), secret(), secret(), secret()
    sent.secrets += [long, typed, cut, form]
    name = f"refused-{uuid.uuid4().hex[:8]}"
    for body in (
        {"name": name, "password": long * 40},  # too long: a validation error
        {"name": name, "password": {"nested": typed}},  # not a string
    ):
        refused = sent.send(http, "POST", "/api/admin/users", body)
        assert refused.status_code == 400, refused.text
    unparsable = (
        (f'{{"name": "{name}", "password": "{cut}"'.encode(), "application/json"),
        (f"name={name}&password={form}".encode(), "application/x-www-form-urlencoded"),
    )
    for raw, content_type in unparsable:
        refused = sent.send(http, "POST", "/api/login", raw, content_type)
        assert refused.status_code == 400, refused.text


def _bearer(http: httpx.Client, sent: Sent, server: Server) -> None:
    """A key in the Authorization header (not one this server knows: loopback runs as admin)."""
    key = secret()
    sent.secrets.append(key)
    made = sent.send(
        http, "POST", "/api/admin/users", {"name": f"b-{uuid.uuid4().hex[:8]}"},
        authorization=f"Bearer {key}",
    )  # fmt: skip
    assert made.status_code == 201, made.text


def _join(http: httpx.Client, sent: Sent, server: Server) -> None:
    """A node joins (its key, the token) and beats (its credential); a bad token is refused."""
    token = http.post("/api/fleet/tokens", json={}).json()["token"]
    key, name = secret(), f"joiner-{uuid.uuid4().hex[:8]}"
    sent.secrets += [token, key]
    sent.kept_by_design = True  # the node's key, which the control plane presents to it
    body = {"token": token, "name": name, "url": "http://127.0.0.1:9", "key": key,
            "capabilities": CAPABILITIES}  # fmt: skip
    joined = sent.send(http, "POST", "/api/fleet/join", body)
    assert joined.status_code == 201, joined.text
    credential = joined.json()["credential"]
    sent.secrets.append(credential)
    beat = sent.send(
        http, "POST", "/api/fleet/heartbeat",
        {"url": "http://127.0.0.1:9", "models": [], "stats": STATS},
        authorization=f"Bearer {credential}",
    )  # fmt: skip
    assert beat.status_code == 200, beat.text
    forged = "brj-" + secret()
    sent.secrets.append(forged)
    refused = sent.send(http, "POST", "/api/fleet/join", {**body, "token": forged})
    assert refused.status_code == 401, refused.text
    assert http.delete(f"/api/fleet/nodes/{name}").status_code == 204


def _peer(http: httpx.Client, sent: Sent, server: Server) -> None:
    key, name = secret(), f"peer-{uuid.uuid4().hex[:8]}"
    sent.secrets.append(key)
    sent.kept_by_design = True
    body = {"name": name, "kind": "ollama", "url": server.url, "key": key}
    added = sent.send(http, "POST", "/api/fleet/nodes", body)
    assert added.status_code == 201, added.text
    assert http.delete(f"/api/fleet/nodes/{name}").status_code == 204


def _mcp(http: httpx.Client, sent: Sent, server: Server) -> None:
    header, env, flag, inline = secret(), secret(), secret(), secret()
    sent.secrets += [header, env, flag, inline]
    sent.kept_by_design = True
    names = [f"h{uuid.uuid4().hex[:8]}", f"s{uuid.uuid4().hex[:8]}"]
    servers = (
        {"name": names[0], "transport": "http", "url": "http://127.0.0.1:9/mcp",
         "headers": {"Authorization": f"Bearer {header}", "X-Tenant": "acme"}},
        {"name": names[1], "transport": "stdio", "command": "mcp-server",
         "args": ["--verbose", "--api-key", flag, f"--token={inline}"],
         "env": {"SERVICE_URL": env}},
    )  # fmt: skip
    for body in servers:
        added = sent.send(http, "POST", "/api/mcp/servers", body)
        assert added.status_code == 201, added.text
    for name in names:
        assert http.delete(f"/api/mcp/servers/{name}").status_code == 204


CASES: dict[str, Callable[[httpx.Client, Sent, Server], None]] = {
    "login": _login,
    "session": _session,
    "users": _users,
    "refused-bodies": _refused_bodies,
    "bearer": _bearer,
    "join-and-heartbeat": _join,
    "peer-key": _peer,
    "mcp-headers-env-args": _mcp,
}


def records(server: Server) -> list[dict[str, Any]]:
    with sqlite3.connect(server.home / "blackroad.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM audit_records ORDER BY idx")]


def database_bytes(server: Server, vacuumed: Path | None) -> bytes:
    """The database's files as they are on disk, or a vacuumed copy (live rows only)."""
    if vacuumed is None:
        return b"".join(path.read_bytes() for path in server.home.glob("blackroad.db*"))
    connection = sqlite.connect(server.home / "blackroad.db")
    try:
        connection.execute("VACUUM INTO ?", (str(vacuumed),))
    finally:
        connection.close()
    return vacuumed.read_bytes()


def bundle_bytes(server: Server, out: Path) -> bytes:
    """The inspector's bundle, as written and with every member inflated."""
    exported = blackroad("audit", "export", "--out", str(out), home=server.home)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    raw = out.read_bytes()
    with zipfile.ZipFile(io.BytesIO(raw)) as bundle:
        return raw + b"".join(bundle.read(name) for name in bundle.namelist())


def listed_records(http: httpx.Client) -> str:
    """Every record as ``/api/audit/records`` lists them, page by page."""
    pages, after = [], None
    while True:
        params: dict[str, int] = {"limit": 500} if after is None else {"limit": 500, "from": after}
        page = http.get("/api/audit/records", params=params)
        assert page.status_code == 200, page.text
        pages.append(page.text)
        after = page.json()["next"]
        if after is None:
            return "".join(pages)


def digests_of(body: bytes) -> set[str]:
    """SHA-256 of a body as sent, and of its canonical JSON form, where it has one."""
    found = {hashlib.sha256(body).hexdigest()}
    with contextlib.suppress(ValueError):
        found.add(hashlib.sha256(canonical(json.loads(body)).encode()).hexdigest())
    return found


@pytest.mark.parametrize("case", list(CASES))
def test_no_secret_sent_to_a_route_enters_any_log(
    audited: tuple[Server, str], case: str, tmp_path: Path
) -> None:
    server, _ = audited
    sent = Sent()
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as http:
        before = len(records(server))
        CASES[case](http, sent, server)
        listed = listed_records(http)
    assert len(records(server)) > before  # what was sent is audited
    assert sent.secrets and all(len(s) >= 8 for s in sent.secrets)
    vacuumed = tmp_path / "vacuumed.db" if sent.kept_by_design else None
    places = {
        "the database": database_bytes(server, vacuumed),
        "the bundle": bundle_bytes(server, tmp_path / "bundle.zip"),
        "/api/audit/records": listed.encode(),
        "the server's log": server.log.read_bytes(),
    }
    for where, data in places.items():
        for value in sent.secrets:
            assert value.encode() not in data, f"{case}: a secret is in {where}"
    with sqlite3.connect(server.home / "blackroad.db") as db:
        errors = [
            row[0] for row in db.execute("SELECT error FROM requests WHERE error IS NOT NULL")
        ]
    assert not [e for e in errors for value in sent.secrets if value in e]
    stored = {
        record.get(name)
        for record in (json.loads(row["record"]) for row in records(server))
        for name in ("input_sha256", "output_sha256")
    }
    for body in sent.bodies:
        assert not digests_of(body) & stored, f"{case}: a digest of a body with a secret"


def test_the_digest_is_of_the_redacted_body_and_the_log_still_verifies(
    audited: tuple[Server, str], tmp_path: Path
) -> None:
    """What ``input_sha256`` stands for, in either mode; a body that cannot be parsed, or
    whose JSON holds no text (a lone surrogate), is withheld whole; and the bundle
    verifies offline as before."""
    server, mode = audited
    name, password = f"digest-{uuid.uuid4().hex[:8]}", secret()
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as http:
        made = http.post("/api/admin/users", json={"name": name, "password": password})
        assert made.status_code == 201, made.text
        cut = f'{{"name": "{name}", "password": "{password}"'.encode()
        as_json = {"content-type": "application/json"}
        refused = http.post("/api/login", content=cut, headers=as_json)
        assert refused.status_code == 400
        # Redacted, then encoded to be digested: the encoding raised, the record
        # was never written and the 400 was cut off mid-response.
        lone = f'{{"name": "{name}\\udcff", "password": "{password}"}}'.encode()
        refused = http.post("/api/login", content=lone, headers=as_json)
        assert refused.status_code == 400, refused.text
    made_row, cut_row, lone_row = records(server)[-3:]
    redacted = canonical({"name": name, "password": "<redacted>"})
    made_record, cut_record = json.loads(made_row["record"]), json.loads(cut_row["record"])
    assert made_record["input_sha256"] == hashlib.sha256(redacted.encode()).hexdigest()
    assert made_row["input"] == (redacted if mode == "full" else None)
    assert "input_sha256" not in cut_record and cut_row["input"] is None
    assert cut_record["input_bytes_withheld"] == len(cut)
    lone_record = json.loads(lone_row["record"])
    assert "input_sha256" not in lone_record and lone_row["input"] is None
    assert lone_record["input_bytes_withheld"] == len(lone)
    bundle = tmp_path / "bundle.zip"
    assert blackroad("audit", "export", "--out", str(bundle), home=server.home).returncode == 0
    key = blackroad("audit", "key", home=server.home).stdout.strip()
    verified = blackroad("audit", "verify", str(bundle), "--key", key, home=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
