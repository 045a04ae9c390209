"""Whether the database can serve this replica: it answers, at the schema this code knows.

``/health/ready`` asks this every few seconds for every proxy in front of
the replica, so it is kept cheap: the schema this code migrates to (the
heads of its migration scripts, which never change while it runs) is read
once; each check is one statement, reading the database's revision from
Alembic's ``alembic_version``, which a database that does not answer cannot
do either. Checks run on a thread of their own, one at a time (probes that
arrive meanwhile share the check under way), and a check that takes longer
than ``TIMEOUT`` is a database that does not answer, whatever it says later.

A database at another revision than this code's is one another replica (of
a newer or an older release) migrated: this replica's queries may not fit
it, so it is not ready until it runs the same release.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from blackroad.store import migrations

log = logging.getLogger(__name__)

# Seconds a check may take: under the 5 s a proxy such as Caddy waits for a
# probe's answer by default, so that it gets the reason, not a timeout.
TIMEOUT = 4.0


class DatabaseReadiness:
    """The database's part of a replica's readiness: None when it can serve, else why not."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._heads: frozenset[str] | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="readiness")
        self._check: asyncio.Future[str | None] | None = None
        self._last: str | None = None  # the last problem logged

    async def problem(self) -> str | None:
        """Why the database cannot serve this replica now; None if it can."""
        if self._check is None or self._check.done():
            self._check = asyncio.get_running_loop().run_in_executor(self._thread, self._read)
        try:
            problem = await asyncio.wait_for(asyncio.shield(self._check), TIMEOUT)
        except TimeoutError:
            problem = f"the database did not answer within {TIMEOUT:g}s"
        if problem != self._last:
            if problem is None:
                log.info("the database can serve again")
            else:
                log.warning("not ready: %s", problem)
            self._last = problem
        return problem

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)

    def _read(self) -> str | None:
        heads = self._code_heads()
        try:
            with self.engine.connect() as connection:
                found = connection.execute(text("SELECT version_num FROM alembic_version"))
                revisions = frozenset(found.scalars())
        except SQLAlchemyError as exc:
            # Logged whole, answered by its type only: the probe is anonymous.
            log.warning("the database did not answer the readiness check: %s", exc)
            return f"the database did not answer ({type(exc).__name__})"
        if revisions != heads:
            return (
                f"the database's schema is at {', '.join(sorted(revisions)) or 'no revision'}, "
                f"this replica's at {', '.join(sorted(heads))}: a replica of another release "
                "migrated it (run the same release everywhere)"
            )
        return None

    def _code_heads(self) -> frozenset[str]:
        if self._heads is None:
            scripts = ScriptDirectory(str(Path(migrations.__file__).parent))
            self._heads = frozenset(scripts.get_heads())
        return self._heads
