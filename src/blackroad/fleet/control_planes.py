"""The control planes (replicas) serving on this database: each registers itself and beats.

Every ``blackroad up`` adds a row to ``control_planes`` when it starts (its
node name, the URL it serves, its version, the database it uses: kind and
host, never a user or password), refreshes the row's ``last_seen``, the
duties it leads (``store/leadership.py``) and why it cannot serve, if it
cannot (its ``/health/ready`` check, ``store/readiness.py``) every
``BEAT_SECONDS`` from a background task, and deletes it when it stops. A
replica whose row was not refreshed for ``GONE_AFTER`` seconds is shown as
gone; it is ready if it is not gone and had no problem; rows of
replicas gone for a day are forgotten when another one starts. Times are the
database's clock, so replicas whose clocks disagree do not see each other gone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.engine import make_url

from blackroad import __version__
from blackroad.config import Settings
from blackroad.store.database import Database
from blackroad.store.leadership import Leadership
from blackroad.store.readiness import DatabaseReadiness
from blackroad.store.schema import control_planes

log = logging.getLogger(__name__)

BEAT_SECONDS = 5.0
GONE_AFTER = 3 * BEAT_SECONDS  # three beats missed
FORGET_AFTER = timedelta(days=1)
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 (names a bind, binds nothing)


@dataclass(frozen=True)
class ControlPlane:
    id: str
    name: str
    url: str
    version: str
    database_kind: str
    database_host: str
    started_at: datetime
    last_seen: datetime
    leads: list[str]
    problem: str | None  # why it is not ready
    ready: bool


def served_url(settings: Settings) -> str:
    """The URL this control plane serves (its node name where it listens on every address)."""
    host = settings.node_name if settings.host in _WILDCARD_HOSTS else settings.host
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    return f"http://{host}:{settings.port}"


def database_place(database: Database) -> tuple[str, str]:
    """The database's kind and where it is: host, port and name, or the SQLite file."""
    if database.path is not None:
        return "sqlite", str(database.path)
    url = make_url(database.engine.url)
    host = url.host or str(url.query.get("host") or "localhost")
    port = f":{url.port}" if url.port else ""
    return "postgresql", f"{host}{port}/{url.database or ''}"


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)  # SQLite's


def _now(connection: Connection) -> datetime:
    """The database's time: every replica's rows are stamped by the same clock."""
    return _utc(connection.execute(select(func.now())).scalar_one())


class Presence:
    """This control plane's row: added by ``register``, refreshed by ``beat``, gone on ``leave``."""

    def __init__(self, database: Database, name: str, url: str) -> None:
        self.database = database
        self.id = uuid.uuid4().hex
        kind, host = database_place(database)
        self._row: dict[str, Any] = {
            "id": self.id,
            "name": name,
            "url": url,
            "version": __version__,
            "database_kind": kind,
            "database_host": host,
        }

    def register(self, leads: list[str], problem: str | None = None) -> None:
        c = control_planes.c
        with self.database.engine.begin() as connection:
            now = _now(connection)
            connection.execute(delete(control_planes).where(c.last_seen < now - FORGET_AFTER))
            connection.execute(
                insert(control_planes).values(
                    **self._row,
                    started_at=now,
                    last_seen=now,
                    leads=json.dumps(leads),
                    problem=problem,
                )
            )

    def beat(self, leads: list[str], problem: str | None = None) -> None:
        """Refresh ``last_seen``, the duties led and the problem; a row found deleted is added
        again."""
        c = control_planes.c
        with self.database.engine.begin() as connection:
            refreshed = connection.execute(
                update(control_planes)
                .where(c.id == self.id)
                .values(last_seen=func.now(), leads=json.dumps(leads), problem=problem)
            )
        if refreshed.rowcount == 0:
            self.register(leads, problem)

    def leave(self) -> None:
        with self.database.engine.begin() as connection:
            connection.execute(delete(control_planes).where(control_planes.c.id == self.id))


def listed(database: Database) -> list[ControlPlane]:
    """Every control plane on the database, the longest running first."""
    c = control_planes.c
    with database.engine.connect() as connection:
        now = _now(connection)
        rows = connection.execute(select(control_planes).order_by(c.started_at, c.name, c.id))
        gone_before = now - timedelta(seconds=GONE_AFTER)
        return [_control_plane(row, gone=_utc(row.last_seen) < gone_before) for row in rows]


def _control_plane(row: Any, gone: bool) -> ControlPlane:
    problem = f"gone: not seen for over {GONE_AFTER:g} s" if gone else row.problem
    return ControlPlane(
        id=row.id,
        name=row.name,
        url=row.url,
        version=row.version,
        database_kind=row.database_kind,
        database_host=row.database_host,
        started_at=_utc(row.started_at),
        last_seen=_utc(row.last_seen),
        leads=list(json.loads(row.leads)),
        problem=problem,
        ready=problem is None,
    )


async def keep_present(
    presence: Presence, leadership: Leadership, readiness: DatabaseReadiness
) -> None:
    """Every ``BEAT_SECONDS``: try to lead the duties not led, then refresh this row."""
    while True:
        await asyncio.sleep(BEAT_SECONDS)
        try:
            await asyncio.to_thread(leadership.refresh)
            problem = await readiness.problem()
            await asyncio.to_thread(presence.beat, leadership.led(), problem)
        except Exception:  # a failed beat is logged; the next one may do better
            log.exception("refreshing this control plane's row failed")
