"""Control planes sharing a database: each is listed, and each duty has one leader.

Leadership and registration run against PostgreSQL directly (``blackroad up``
does not start on it until every store is ported); the API, the CLI and the
desktop are tested on SQLite, where the one control plane leads every duty.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import update
from sqlalchemy.engine import make_url

from blackroad.audit.log import AuditLog, Entry, checkpoints
from blackroad.fleet.control_planes import Presence, database_place, listed
from blackroad.store.database import Database
from blackroad.store.leadership import AUDIT_CHECKPOINTS, DUTIES, PLACEMENT, Leadership
from blackroad.store.schema import control_planes
from tests.support.postgres import Postgres
from tests.support.server import Server, blackroad

WAIT = 60.0  # seconds a condition may take on a loaded machine


def eventually(condition: Callable[[], bool], then: Callable[[], None] = lambda: None) -> None:
    """Wait until ``condition()`` holds, running ``then`` between tries."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        then()
        time.sleep(0.05)


async def until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds, letting the event loop run between tries."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.02)


@pytest.fixture
def shared(postgres: Postgres) -> str:
    """One PostgreSQL database, as several control planes share it."""
    return postgres.new_database()


def test_the_server_on_sqlite_leads_every_duty_and_lists_itself(
    server: Server, http: httpx.Client
) -> None:
    replicas = http.get("/api/fleet").json()["control_planes"]
    assert len(replicas) == 1
    (this,) = replicas
    assert this["url"] == server.url and this["ready"] is True and this["problem"] is None
    assert this["leads"] == list(DUTIES)
    assert this["database"] == {"kind": "sqlite", "host": str(server.home / "blackroad.db")}
    printed = blackroad("fleet", home=server.home)
    assert printed.returncode == 0, printed.stdout + printed.stderr
    assert "CONTROL PLANE" in printed.stdout
    assert " ready " in printed.stdout and "not ready" not in printed.stdout
    assert f"{PLACEMENT}, {AUDIT_CHECKPOINTS}" in printed.stdout

    def beaten() -> bool:  # its background task refreshes the row while it runs
        (now,) = http.get("/api/fleet").json()["control_planes"]
        return bool(now["last_seen"] > this["last_seen"] and now["ready"])

    eventually(beaten)


def test_a_replica_that_stops_beating_is_shown_gone_and_one_that_stops_leaves(
    database_location: Path | str,
) -> None:
    database = Database(database_location)
    first, second = (
        Presence(database, "cp-1", "http://a:1"),
        Presence(database, "cp-2", "http://b:2"),
    )
    first.register([PLACEMENT])
    second.register([])
    assert [(r.name, r.ready, r.leads) for r in listed(database)] == [
        ("cp-1", True, [PLACEMENT]),
        ("cp-2", True, []),
    ]
    with database.engine.begin() as connection:  # cp-1 last beat a minute ago: it died
        connection.execute(
            update(control_planes)
            .where(control_planes.c.id == first.id)
            .values(last_seen=listed(database)[0].last_seen.replace(year=2000))
        )
    assert [(r.name, r.ready) for r in listed(database)] == [("cp-1", False), ("cp-2", True)]
    assert "gone" in (listed(database)[0].problem or "")
    first.beat([PLACEMENT, AUDIT_CHECKPOINTS])  # it was only slow
    assert listed(database)[0].ready and listed(database)[0].leads == list(DUTIES)
    second.beat([], "the database's schema is at 9999_newer")  # its readiness check failed
    assert [(r.name, r.ready, r.problem) for r in listed(database)] == [
        ("cp-1", True, None),
        ("cp-2", False, "the database's schema is at 9999_newer"),
    ]
    second.leave()
    assert [r.name for r in listed(database)] == ["cp-1"]
    second.beat([])  # a row deleted behind a live replica's back comes back
    assert [r.name for r in listed(database)] == ["cp-1", "cp-2"]
    database.close()


@pytest.mark.anyio
async def test_the_audit_log_is_signed_only_by_the_leader_of_its_checkpoints(
    database_location: Path | str, tmp_path: Path
) -> None:
    log = AuditLog(Database(database_location), tmp_path, "blackroad/test/audit", keep_texts=False)
    log.record(Entry("change", {"n": 1}))
    leading, asked = False, 0

    def signs() -> bool:
        nonlocal asked
        asked += 1
        return leading

    signer = asyncio.create_task(checkpoints(log, every_records=1, every_seconds=0.01, signs=signs))
    try:
        await until(lambda: asked >= 3)  # three rounds with a record due, led elsewhere
        assert log.signed_size() == 0
        leading = True
        await until(lambda: log.signed_size() == 1)
    finally:
        signer.cancel()
    log.database.close()


def test_the_database_is_shown_without_its_password(shared: str) -> None:
    with_password = make_url(shared).set(username="postgres", password="s3cret-pw")
    database = Database(with_password.render_as_string(hide_password=False))
    kind, host = database_place(database)
    assert (
        kind == "postgresql"
        and "s3cret" not in host
        and host.endswith(f"/{with_password.database}")
    )
    Presence(database, "cp", "http://a:1").register([])
    assert "s3cret" not in repr(listed(database))
    database.close()


def test_one_replica_leads_each_duty_and_another_takes_over_when_it_stops(shared: str) -> None:
    databases = [Database(shared), Database(shared)]
    first, second = (Leadership(database, lease=WAIT) for database in databases)
    first.refresh()
    second.refresh()
    assert first.led() == list(DUTIES) and second.led() == []
    second.refresh()  # trying again changes nothing while the leader lives
    assert second.led() == []
    first.close()
    assert first.led() == []
    eventually(lambda: second.led() == list(DUTIES), then=second.refresh)
    first.refresh()
    assert first.led() == []
    second.close()
    for database in databases:
        database.close()


def test_a_leader_whose_session_is_cut_leads_no_more_and_another_takes_over(
    shared: str, postgres: Postgres
) -> None:
    databases = [Database(shared), Database(shared)]
    first, second = (Leadership(database, lease=WAIT) for database in databases)
    first.refresh()
    second.refresh()
    assert first.led() == list(DUTIES)
    with psycopg.connect(postgres.admin_url, autocommit=True) as admin:
        cut = admin.execute(  # the session holding the duties' locks
            "SELECT pg_terminate_backend(pid) FROM (SELECT DISTINCT l.pid FROM pg_locks l"
            " JOIN pg_database d ON d.oid = l.database"
            " WHERE l.locktype = 'advisory' AND d.datname = %s) AS holders",
            (make_url(shared).database,),
        ).fetchall()
    assert cut == [(True,)]
    first.refresh()  # finds its session gone: it gives the duties up
    assert first.led() == []
    eventually(lambda: second.led() == list(DUTIES), then=second.refresh)
    second.close()
    for database in databases:
        database.close()


LEADER = """
import sys
from blackroad.store.database import Database
from blackroad.store.leadership import Leadership
leadership = Leadership(Database(sys.argv[1]), lease=60)
leadership.refresh()
print(",".join(leadership.led()), flush=True)
sys.stdin.read()
"""


def test_a_killed_leader_process_hands_its_duties_to_the_next_replica(shared: str) -> None:
    leader = subprocess.Popen(
        [sys.executable, "-c", LEADER, shared],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert leader.stdout is not None
        assert leader.stdout.readline().strip() == ",".join(DUTIES)
        database = Database(shared)
        replica = Leadership(database, lease=WAIT)
        replica.refresh()
        assert replica.led() == []
        os.kill(leader.pid, signal.SIGKILL)
        eventually(lambda: replica.led() == list(DUTIES), then=replica.refresh)
        replica.close()
        database.close()
    finally:
        leader.kill()
        leader.wait(timeout=WAIT)
