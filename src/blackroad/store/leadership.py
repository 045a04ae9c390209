"""Who leads the duties that must run once however many control planes share the database.

A duty (``DUTIES``: placing models on the fleet's nodes, signing the audit
log's checkpoints) runs on its leader only, chosen through the database's
own locks, with no election of ours:

- On PostgreSQL, the leader of a duty is the replica whose dedicated
  connection holds the session-level advisory lock of the duty's key
  (``pg_try_advisory_lock``). Every replica tries to take the locks it does
  not hold at each ``refresh``; PostgreSQL grants each to one session. The
  lock goes with its session: a replica that stops, crashes or is killed
  loses its connection, and with it the lock, and another takes the duty at
  its next try. A machine that vanishes without closing its sockets is
  dropped by PostgreSQL's keepalives, asked for on that session (about 20 s).
- On SQLite there is one control plane (the file is on its disk): it leads
  every duty.

A leader that loses its connection (the database restarted, a partition)
stops leading as soon as a refresh fails, and in any case once its hold has
not been confirmed for ``lease`` seconds; so two replicas may both run a
duty for at most about one lease. This is not a fence: the duties
here are safe to run twice (placement pulls what is missing; a checkpoint of
a size already signed is not signed again).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any

import psycopg

from blackroad.store.database import Database

log = logging.getLogger(__name__)

PLACEMENT = "placement"
AUDIT_CHECKPOINTS = "audit-checkpoints"
DUTIES = (PLACEMENT, AUDIT_CHECKPOINTS)
# PostgreSQL closes the session of a machine that stopped answering after
# idle + interval x count seconds, releasing its locks (ignored on a Unix socket).
_KEEPALIVES = {"keepalives_idle": 5, "keepalives_interval": 5, "keepalives_count": 3}
_SERVER_KEEPALIVES = " ".join(f"-c tcp_{name}={value}" for name, value in _KEEPALIVES.items())


def duty_key(duty: str) -> int:
    """The advisory lock key of ``duty``: a signed 64-bit number, the same on every replica."""
    digest = hashlib.sha256(f"blackroad duty {duty}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Leadership:
    """The duties this control plane leads; ``refresh`` (blocking) tries to take the others."""

    def __init__(self, database: Database, lease: float, duties: tuple[str, ...] = DUTIES) -> None:
        self.database = database
        self.duties = duties
        self.lease = lease
        self._held: set[str] = set()
        self._confirmed = 0.0  # monotonic time the held locks were last known to be held
        self._connection: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()  # one refresh at a time, and none after close

    def leads(self, duty: str) -> bool:
        """Does this replica lead ``duty`` now? (Cheap: no query.)"""
        if self.database.dialect == "sqlite":
            return True
        return duty in self._held and time.monotonic() - self._confirmed <= self.lease

    def led(self) -> list[str]:
        return [duty for duty in self.duties if self.leads(duty)]

    def refresh(self) -> None:
        """Confirm the locks held and try to take the others; a failure gives all of them up."""
        if self.database.dialect == "sqlite":
            return
        with self._lock:
            try:
                connection = self._connected()
                connection.execute("SELECT 1")  # the session, and so its locks, still lives
                for duty in self.duties:
                    if duty not in self._held and self._try_lock(connection, duty):
                        log.info("this control plane leads %s now", duty)
                        self._held.add(duty)
                self._confirmed = time.monotonic()
            except psycopg.Error as exc:
                if self._held:
                    log.warning("leading %s no more: %s", ", ".join(sorted(self._held)), exc)
                self._drop()

    def close(self) -> None:
        """Give every duty up at once (closing the session releases its locks)."""
        with self._lock:
            self._drop()

    def _connected(self) -> psycopg.Connection[Any]:
        if self._connection is None or self._connection.closed:
            self._drop()
            url = self.database.engine.url.set(drivername="postgresql")
            self._connection = psycopg.connect(
                url.render_as_string(hide_password=False),
                autocommit=True,
                connect_timeout=10,
                options=_SERVER_KEEPALIVES,
                **_KEEPALIVES,  # type: ignore[arg-type]
            )
        return self._connection

    @staticmethod
    def _try_lock(connection: psycopg.Connection[Any], duty: str) -> bool:
        row = connection.execute("SELECT pg_try_advisory_lock(%s)", (duty_key(duty),)).fetchone()
        return row is not None and bool(row[0])

    def _drop(self) -> None:
        self._held.clear()
        if self._connection is not None:
            self._connection.close()
            self._connection = None
