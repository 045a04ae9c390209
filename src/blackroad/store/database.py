"""The database: engine setup (SQLite in WAL mode, or PostgreSQL), migrations, and queries.

The store is a SQLite file under ``BLACKROAD_HOME`` unless
``BLACKROAD_DATABASE_URL`` names a PostgreSQL database, which several control
planes can share (``docs/architecture.md``, "The database", says which stores
run there yet).

SQLite runs with ``journal_mode=WAL`` and ``synchronous=NORMAL``: a committed
transaction survives a crash or ``kill -9`` of the process (WAL frames are in
the OS page cache and replayed on open); only a power cut can cost the last
few commits, which is the trade-off every request log here accepts. Writes are
synchronous calls; async callers run them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import psycopg
from alembic import command
from alembic.config import Config
from psycopg.rows import dict_row
from psycopg.types.string import TextLoader
from sqlalchemy import Connection, Engine, create_engine, delete, event, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from blackroad.store import sqlite
from blackroad.store.schema import AddedModel, RequestRecord

T = TypeVar("T")
Dialect = Literal["sqlite", "postgresql"]
# Address space, not memory: pages are shared with the OS page cache (bench/retrieval.py).
READER_MMAP_BYTES = 1 << 30
# Every PostgreSQL session keeps time in UTC, as SQLite's rows do.
_POSTGRES_OPTIONS = "-c timezone=UTC"
# The advisory lock control planes take to migrate one at a time (any constant; "BRmi").
MIGRATION_LOCK = 0x42526D69


class Row(Protocol):
    """A row of a plain read (``sqlite3.Row``, or a dict on PostgreSQL), by column name."""

    def __getitem__(self, column: str, /) -> Any: ...


def _on_connect(dbapi_connection: sqlite.Connection, _record: Any) -> None:
    sqlite.load_extensions(dbapi_connection)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _migrate(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", "blackroad.store:migrations")
    if connection.dialect.name == "postgresql":
        # Control planes starting together on one database: one migrates, the
        # others wait here and find the schema at head (PostgreSQL's DDL is transactional).
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _group_models(dialect: Dialect) -> str:
    """The model lists of a user's groups, as the text of a JSON array (``null``: every model)."""
    if dialect == "sqlite":
        models = "json_group_array(json(coalesce(g.models, 'null')))"
    else:
        models = "coalesce(json_agg(g.models), '[]')"
    return f"""(SELECT {models}
          FROM group_members m JOIN groups g ON g.id = m.group_id
         WHERE m.user_id = u.id)"""  # noqa: S608


# The limit columns (schema.LimitColumns) come once for the key, then for its user.
# A user with their limits and the model lists of their groups. The queries
# below are put together from these constants only (hence the noqa).
def _user_columns(dialect: Dialect) -> str:
    return f"""
       u.name AS "user", u.role, u.disabled,
       u.rpm AS user_rpm, u.tpm AS user_tpm, u.max_concurrent AS user_max_concurrent,
       u.daily_tokens AS user_daily_tokens, u.monthly_tokens AS user_monthly_tokens,
       {_group_models(dialect)} AS group_models
"""


def _key_row(dialect: Dialect) -> str:
    param = "?" if dialect == "sqlite" else "%s"
    return f"""
SELECT k.prefix, k.secret_hash, k.scopes, k.models, k.expires_at, k.revoked_at,
       k.rpm, k.tpm, k.max_concurrent, k.daily_tokens, k.monthly_tokens, {_user_columns(dialect)}
  FROM api_keys k JOIN users u ON u.id = k.user_id
 WHERE k.prefix = {param}
"""  # noqa: S608


def _user_row(dialect: Dialect) -> str:
    param = "?" if dialect == "sqlite" else "%s"
    return f"SELECT {_user_columns(dialect)} FROM users u WHERE u.name = {param}"  # noqa: S608


class NotOnPostgres(NotImplementedError):
    """A store that still speaks SQLite's dialect was used on PostgreSQL."""

    def __init__(self) -> None:
        super().__init__(
            "this store runs on SQLite only so far (docs/architecture.md, 'The database')"
        )


def raw_connection(session: Session | Connection) -> sqlite.Connection:
    """The SQLite DB-API connection under ``session``, in its transaction."""
    if isinstance(session, Session):
        session = session.connection()
    connection = session.connection.driver_connection
    if not isinstance(connection, sqlite.Connection):
        raise NotOnPostgres
    return connection


def _engine(location: Path | str) -> tuple[Engine, Path | None]:
    """The engine of ``location`` (a SQLite file, or a ``sqlite:`` or ``postgresql:`` URL)."""
    if isinstance(location, str):
        url = make_url(location)
        if url.get_backend_name() == "postgresql":
            # psycopg 3, whatever driver the URL names: the one BlackRoad ships.
            engine = create_engine(
                url.set(drivername="postgresql+psycopg"),
                connect_args={"options": _POSTGRES_OPTIONS},
                pool_pre_ping=True,
            )
            return engine, None
        if url.get_backend_name() != "sqlite" or not url.database:
            # Only the scheme is named: the rest of the URL may hold a password.
            raise ValueError(
                "BLACKROAD_DATABASE_URL must name a postgresql or sqlite database,"
                f" not {url.get_backend_name()!r}"
            )
        location = Path(url.database)
    location.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{location}", module=sqlite.driver)
    event.listen(engine, "connect", _on_connect)
    return engine, location


_REQUEST_COLUMNS = [c for c in RequestRecord.__table__.columns if not c.primary_key]
_INSERT_REQUEST = insert(RequestRecord)


class Database:
    """One SQLite file or PostgreSQL database, migrated to the newest schema on open."""

    def __init__(self, location: Path | str) -> None:
        self.engine, self.path = _engine(location)
        self.dialect: Dialect = "sqlite" if self.path is not None else "postgresql"
        with self.engine.begin() as connection:
            _migrate(connection)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._readers = threading.local()
        self._reader_connections: list[sqlite.Connection | psycopg.Connection[Any]] = []
        self._key_row, self._user_row = _key_row(self.dialect), _user_row(self.dialect)

    def session(self) -> Session:
        return self._sessions()

    def close(self) -> None:
        for connection in self._reader_connections:
            connection.close()
        self._reader_connections.clear()
        self.engine.dispose()

    def reader(self) -> sqlite.Connection:
        """This thread's read-only SQLite connection, for reads on every request's path."""
        if self.path is None:
            raise NotOnPostgres
        connection: sqlite.Connection | None = getattr(self._readers, "connection", None)
        if connection is None:
            # Used by this thread only; closed by close(), which may run on another.
            connection = sqlite.connect(self.path, check_same_thread=False)
            connection.row_factory = sqlite.Row
            connection.execute("PRAGMA query_only=ON")
            # Reads of large indexes (a knowledge base's vectors) straight from the page
            # cache, with no copy per page: hybrid search at 100k chunks, 24 -> 18 ms.
            connection.execute(f"PRAGMA mmap_size={READER_MMAP_BYTES}")
            connection.execute("PRAGMA busy_timeout=10000")
            self._readers.connection = connection
            self._reader_connections.append(connection)
        return connection

    def _postgres_reader(self) -> psycopg.Connection[Any]:
        """This thread's PostgreSQL connection for plain reads: autocommit, rows as dicts.

        JSON comes back as its text, as SQLite hands it, so a row reads the same
        from either database. A connection found closed (the server restarted)
        is replaced.
        """
        connection: psycopg.Connection[Any] | None = getattr(self._readers, "connection", None)
        if connection is None or connection.closed:
            if connection is not None:
                self._reader_connections.remove(connection)
            url = self.engine.url.set(drivername="postgresql")
            connection = psycopg.connect(
                url.render_as_string(hide_password=False),
                autocommit=True,
                row_factory=dict_row,
                options=f"{_POSTGRES_OPTIONS} -c default_transaction_read_only=on",
            )
            for kind in ("json", "jsonb"):
                connection.adapters.register_loader(kind, TextLoader)
            self._readers.connection = connection
            self._reader_connections.append(connection)
        return connection

    def _read(self, sql: str, *params: object) -> list[Row]:
        """The rows of one plain read on this thread's reader (``?`` or ``%s`` per dialect)."""
        reader = self.reader() if self.path is not None else self._postgres_reader()
        return reader.execute(sql, params).fetchall()

    # -- keys --------------------------------------------------------------

    def key_row(self, prefix: str) -> Row | None:
        """A key with its user and the model lists of the user's groups, in one read.

        Every authenticated request runs this, so it is one indexed query on a
        plain DB-API connection: through the ORM it cost ~0.4 ms a request
        (bench/auth_overhead.py), this way ~0.01 ms.
        """
        return next(iter(self._read(self._key_row, prefix)), None)

    def user_row(self, name: str) -> Row | None:
        """A user with the columns of ``key_row`` that are the user's."""
        return next(iter(self._read(self._user_row, name)), None)

    # -- request log -------------------------------------------------------

    def write(self, work: Callable[[sqlite.Connection], T]) -> T:
        """Run ``work`` on the raw connection of one transaction; committed if it returns."""
        with self.session() as session, session.begin():
            return work(raw_connection(session))

    def record_request(
        self, record: RequestRecord, also: Callable[[Connection], object] | None = None
    ) -> None:
        """Commit ``record``, and in the same transaction whatever ``also`` writes (its audit).

        Every request waits for this before its answer ends, so it is one Core
        insert on a connection of the engine: through a Session it took ~0.45 ms
        of CPU, this way ~0.14 ms (bench/fleet.py, "Router overhead").
        """
        # Unset attributes are left out, so the columns' defaults apply as through a Session.
        row = {
            c.key: value for c in _REQUEST_COLUMNS if (value := getattr(record, c.key)) is not None
        }
        with self.engine.begin() as connection:
            connection.execute(_INSERT_REQUEST, row)
            if also is not None:
                also(connection)

    def usage_by_day(self, since: datetime, user: str | None = None) -> list[dict[str, Any]]:
        """Requests, tokens and time per day, user, key, model and node since ``since``."""
        r = RequestRecord
        day = func.date(r.created_at)
        query = (
            select(
                day.label("day"),
                r.user,
                r.key_prefix,
                r.model,
                r.node,
                func.count().label("requests"),
                func.sum(r.prompt_tokens).label("prompt_tokens"),
                func.sum(r.completion_tokens).label("completion_tokens"),
                func.avg(r.ttft_ms).label("avg_ttft_ms"),
                func.avg(r.duration_ms).label("avg_duration_ms"),
                func.sum(r.duration_ms).label("busy_ms"),
            )
            .where(r.created_at >= since, r.model.is_not(None))
            .group_by(day, r.user, r.key_prefix, r.model, r.node)
            .order_by(day, r.user, r.model, r.node)
        )
        if user is not None:
            query = query.where(r.user == user)
        with self.session() as session:
            return [dict(row._mapping) for row in session.execute(query)]

    def tokens_since(self, user: str | None, key_prefix: str | None, since: datetime) -> int:
        """Tokens in and out recorded since ``since`` for a user, or for a key."""
        r = RequestRecord
        query = select(func.coalesce(func.sum(r.prompt_tokens + r.completion_tokens), 0)).where(
            r.created_at >= since
        )
        query = (
            query.where(r.user == user)
            if user is not None
            else query.where(r.key_prefix == key_prefix)
        )
        with self.session() as session:
            return int(session.scalar(query) or 0)

    def decode_rates(self, node: str, since: datetime) -> dict[str, float]:
        """Decoding speed per model (tokens/s) over ``node``'s streamed requests since ``since``.

        A streamed request decodes from its first token to its end; the first
        token came out of reading the prompt, so it is not counted. A request
        that was not streamed says nothing of its decoding and is left out.
        The rate is per sequence, at whatever concurrency the model ran.
        """
        r = RequestRecord
        query = (
            select(
                r.model,
                func.sum(r.completion_tokens - 1),
                func.sum(r.duration_ms - r.ttft_ms) / 1000,
            )
            .where(
                r.created_at >= since,
                r.node == node,
                r.model.is_not(None),
                r.status == 200,
                r.ttft_ms.is_not(None),
                r.completion_tokens > 1,
                r.duration_ms > r.ttft_ms,
            )
            .group_by(r.model)
        )
        with self.session() as session:
            return {
                model: tokens / seconds
                for model, tokens, seconds in session.execute(query).tuples()
                if model is not None and seconds
            }

    def usage_by_node(self, since: datetime, local_node: str) -> list[dict[str, Any]]:
        """Inference requests, tokens and busy seconds since ``since``, per node.

        Busy time is the union of the requests' intervals (``created_at`` to
        ``created_at + duration_ms``), not the sum of their durations:
        requests overlap (one waits in a model's queue while another runs,
        two models run at once), and a sum would count the same seconds, and
        so the same watts, more than once. ``first_at`` is the node's first
        record of any kind, ever: it has been running at least since then.
        Nodes with any record since ``since`` are listed; records written
        before requests named their node count as ``local_node``.
        """
        r = RequestRecord
        node = func.coalesce(r.node, local_node)
        nodes = (
            select(node, func.min(r.created_at))
            .group_by(node)
            .having(func.max(r.created_at) >= since)
        )
        intervals = (
            select(node, r.created_at, r.duration_ms, r.prompt_tokens, r.completion_tokens)
            .where(r.created_at >= since, r.model.is_not(None))
            .order_by(node, r.created_at)
        )
        with self.session() as session:
            usage: dict[str, dict[str, Any]] = {
                name: {
                    "node": name,
                    "requests": 0,
                    "prompt_tokens": 0,
                    "completion_tokens": 0,
                    "busy_seconds": 0.0,
                    "first_at": first.replace(tzinfo=UTC),  # SQLite keeps UTC, without the zone
                }
                for name, first in session.execute(nodes)
            }
            busy_from = busy_to = 0.0  # the merged interval being built, in epoch seconds
            current = None
            for name, created_at, duration_ms, prompt, completion in session.execute(intervals):
                row = usage[name]
                row["requests"] += 1
                row["prompt_tokens"] += prompt
                row["completion_tokens"] += completion
                start = created_at.replace(tzinfo=UTC).timestamp()
                end = start + duration_ms / 1000
                if name != current or start > busy_to:
                    if current is not None:
                        usage[current]["busy_seconds"] += busy_to - busy_from
                    current, busy_from, busy_to = name, start, end
                else:
                    busy_to = max(busy_to, end)
            if current is not None:
                usage[current]["busy_seconds"] += busy_to - busy_from
        return list(usage.values())

    # -- added models ------------------------------------------------------

    def add_model(self, name: str, path: Path) -> None:
        with self.session() as session, session.begin():
            session.merge(AddedModel(name=name, path=str(path), added_at=datetime.now(UTC)))

    def remove_added_model(self, name: str) -> None:
        with self.session() as session, session.begin():
            session.execute(delete(AddedModel).where(AddedModel.name == name))

    def added_models(self) -> list[tuple[str, str]]:
        """Name and path of each GGUF file added by name.

        On the path of every request (the catalog looks models up by name), so
        a plain read, as ``key_row``: through the ORM it was most of the
        catalog's part of a routed request (py-spy, under bench/fleet.py's load).
        """
        rows = self._read("SELECT name, path FROM added_models ORDER BY name")
        return [(str(row["name"]), str(row["path"])) for row in rows]
