"""The database: engine setup (SQLite in WAL mode), migrations, and the queries BlackRoad runs.

SQLite runs with ``journal_mode=WAL`` and ``synchronous=NORMAL``: a committed
transaction survives a crash or ``kill -9`` of the process (WAL frames are in
the OS page cache and replayed on open); only a power cut can cost the last
few commits, which is the trade-off every request log here accepts. Writes are
synchronous calls; async callers run them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, delete, event, func, select
from sqlalchemy.orm import Session, sessionmaker

from blackroad.store.schema import AddedModel, RequestRecord


def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _migrate(engine: Engine) -> None:
    config = Config()
    config.set_main_option("script_location", "blackroad.store:migrations")
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class Database:
    """One SQLite file, migrated to the newest schema on open."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.engine = create_engine(f"sqlite:///{path}")
        event.listen(self.engine, "connect", _on_connect)
        _migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def session(self) -> Session:
        return self._sessions()

    def close(self) -> None:
        self.engine.dispose()

    # -- request log -------------------------------------------------------

    def record_request(self, record: RequestRecord) -> None:
        with self.session() as session, session.begin():
            session.add(record)

    def usage_by_day(self, since: datetime, user: str | None = None) -> list[dict[str, Any]]:
        """Requests, tokens and time per day, user, key and model since ``since``."""
        r = RequestRecord
        day = func.date(r.created_at)
        query = (
            select(
                day.label("day"),
                r.user,
                r.key_prefix,
                r.model,
                func.count().label("requests"),
                func.sum(r.prompt_tokens).label("prompt_tokens"),
                func.sum(r.completion_tokens).label("completion_tokens"),
                func.avg(r.ttft_ms).label("avg_ttft_ms"),
                func.sum(r.duration_ms).label("busy_ms"),
            )
            .where(r.created_at >= since, r.model.is_not(None))
            .group_by(day, r.user, r.key_prefix, r.model)
            .order_by(day, r.user, r.model)
        )
        if user is not None:
            query = query.where(r.user == user)
        with self.session() as session:
            return [dict(row._mapping) for row in session.execute(query)]

    # -- added models ------------------------------------------------------

    def add_model(self, name: str, path: Path) -> None:
        with self.session() as session, session.begin():
            session.merge(AddedModel(name=name, path=str(path), added_at=datetime.now(UTC)))

    def remove_added_model(self, name: str) -> None:
        with self.session() as session, session.begin():
            session.execute(delete(AddedModel).where(AddedModel.name == name))

    def added_models(self) -> Sequence[AddedModel]:
        with self.session() as session:
            return session.scalars(select(AddedModel).order_by(AddedModel.name)).all()
