"""Tables. Changes here need a new, named migration in ``migrations/versions``."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    cast,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine, UserDefinedType

# 64-bit on every database, as SQLite's INTEGER is (PostgreSQL's is 32-bit, migration
# 0015); INTEGER itself on SQLite, where only that type makes a primary key the rowid.
BigInt = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class LimitColumns:
    """Limits a user or a key is held to; ``None`` is no limit."""

    rpm: Mapped[int | None] = mapped_column(BigInt)  # requests per minute
    tpm: Mapped[int | None] = mapped_column(BigInt)  # tokens per minute
    max_concurrent: Mapped[int | None] = mapped_column(BigInt)
    daily_tokens: Mapped[int | None] = mapped_column(BigInt)  # per UTC day
    monthly_tokens: Mapped[int | None] = mapped_column(BigInt)  # per UTC calendar month


class RequestRecord(Base):
    """One API request, written before its response ends."""

    __tablename__ = "requests"

    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(256))
    model: Mapped[str | None] = mapped_column(String(256), index=True)
    client: Mapped[str | None] = mapped_column(String(128))
    user: Mapped[str | None] = mapped_column(String(128), index=True)
    key_prefix: Mapped[str | None] = mapped_column(String(32))
    node: Mapped[str | None] = mapped_column(String(128), index=True)
    status: Mapped[int] = mapped_column(BigInt)
    prompt_tokens: Mapped[int] = mapped_column(BigInt, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInt, default=0)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    duration_ms: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)


class AddedModel(Base):
    """A GGUF file registered by ``blackroad models add`` under a chosen name."""

    __tablename__ = "added_models"

    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class User(LimitColumns, Base):
    """A person or an application, with a role (``admin`` or ``user``)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(String(256))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiKey(LimitColumns, Base):
    """An API key: only its hash is kept; its prefix identifies it to people."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    models: Mapped[list[str] | None] = mapped_column(JSON)  # None: every model
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Made by a login (name and password): ended when its user's rights change.
    session: Mapped[bool] = mapped_column(Boolean, default=False)


class Group(Base):
    """A set of users sharing access to models (``None``: every model)."""

    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    models: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class GroupMember(Base):
    __tablename__ = "group_members"

    group_id: Mapped[int] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Node(Base):
    """A remote server this control plane routes to: an Ollama, OpenAI-compatible or BlackRoad node.

    BlackRoad nodes (kind ``blackroad``) join with a token and report by heartbeat.
    """

    __tablename__ = "nodes"

    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # "ollama", "openai" or "blackroad"
    url: Mapped[str] = mapped_column(Text)
    # The key BlackRoad presents to the peer (the peer's, not one of ours).
    api_key: Mapped[str | None] = mapped_column(Text)
    models: Mapped[list[str]] = mapped_column(JSON)  # as last discovered
    state: Mapped[str] = mapped_column(String(16))  # "up" or "down"
    last_seen: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # A joined node's heartbeat credential (SHA-256; the node keeps the secret).
    credential_hash: Mapped[str | None] = mapped_column(String(64), unique=True, index=True)
    # What a joined node last reported: load, free memory, capabilities.
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Drained by an admin: routed no new work (what it runs now finishes).
    draining: Mapped[bool] = mapped_column(Boolean, default=False)


class JoinToken(Base):
    """A token that lets a machine join the fleet, and nothing else; only its hash is kept."""

    __tablename__ = "join_tokens"

    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The last join it allowed, for the listing.
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    used_by: Mapped[str | None] = mapped_column(String(128))
    # Joins it allows (one unless made for more), and joins it allowed: counted atomically.
    max_uses: Mapped[int] = mapped_column(BigInt, default=1)
    uses: Mapped[int] = mapped_column(BigInt, default=0)


class Placement(Base):
    """A model the fleet keeps ``replicas`` copies of, on nodes it chooses."""

    __tablename__ = "placements"

    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    model: Mapped[str] = mapped_column(String(256), unique=True)
    replicas: Mapped[int] = mapped_column(BigInt)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# The audit log (migration 0008): Core tables, reached through ``audit/records.py``.
audit_records = Table(
    "audit_records",
    Base.metadata,
    # The leaf's index in the tree: dense, from 0, never reused.
    Column("idx", BigInt, primary_key=True, autoincrement=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Column("record", Text, nullable=False),  # the leaf's data, byte for byte
    Column("time", Text, nullable=False, index=True),  # ISO-8601 UTC, as in the record
    # Full texts kept outside the leaf (the leaf holds their sha256), so they can be erased.
    Column("input", Text),
    Column("output", Text),
)
audit_state = Table(  # one row (id 1): the tree's size, compact range and last leaf
    "audit_state",
    Base.metadata,
    Column("id", BigInt, primary_key=True),
    Column("size", BigInt, nullable=False),
    Column("frontier", JSON, nullable=False),
    Column("last_leaf", LargeBinary(32)),
)
audit_checkpoints = Table(
    "audit_checkpoints",
    Base.metadata,
    Column("size", BigInt, primary_key=True, autoincrement=False),
    Column("note", Text, nullable=False),
    Column("time", Text, nullable=False),
)

control_planes = Table(  # the replicas serving on this database (fleet/control_planes.py)
    "control_planes",
    Base.metadata,
    Column("id", String(32), primary_key=True),  # random, per process
    Column("name", String(128), nullable=False),  # its node name
    Column("url", Text, nullable=False),
    Column("version", String(64), nullable=False),
    Column("database_kind", String(16), nullable=False),
    Column("database_host", Text, nullable=False),  # never the password
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
    Column("leads", Text, nullable=False),  # a JSON array of the duties it led at last_seen
    Column("problem", Text),  # why it could not serve at last_seen (store/readiness.py)
)


class Embedding(TypeDecorator[Sequence[float]]):
    """A vector: float32 little-endian bytes on SQLite (what sqlite-vec reads), pgvector's
    ``vector`` of any width on PostgreSQL (migration 0017). Written, never read back."""

    impl = LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(PgVector())
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value: Sequence[float] | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "postgresql":
            return PgVector.text(value)
        return struct.pack(f"<{len(value)}f", *value)


class PgVector(UserDefinedType[str]):
    """pgvector's ``vector``, with no fixed width, bound as its text (``[1.0,2.0]``)."""

    cache_ok = True

    def get_col_spec(self, **_: Any) -> str:
        return "vector"

    def bind_expression(self, bindvalue: Any) -> Any:
        return cast(bindvalue, self)

    @staticmethod
    def text(vector: Sequence[float]) -> str:
        return "[" + ",".join(repr(float(v)) for v in vector) + "]"


def _owned(name: str, *items: Any) -> Table:
    """A table of rows that belong to a user (``owner``), with an ``id`` never reused (0013)."""
    return Table(
        name,
        Base.metadata,
        Column("id", BigInt, primary_key=True),
        *items,
        sqlite_autoincrement=True,
    )


def _parent(column: str, target: str) -> Column[int]:
    """A reference to ``target`` whose rows go with it (``ON DELETE CASCADE``)."""
    return Column(
        column, BigInt, ForeignKey(target, ondelete="CASCADE"), nullable=False, index=True
    )


# Conversations and memories (migrations 0009, 0013, 0017): Core tables, reached through
# ``memory/conversations.py`` and ``memory/facts.py``. Times are ISO-8601 UTC text.
conversations = _owned(
    "conversations",
    Column("owner", String(128), nullable=False, index=True),
    Column("title", Text, nullable=False),
    Column("model", String(256)),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
)
messages = _owned(
    "messages",
    _parent("conversation_id", "conversations.id"),
    Column("role", String(16), nullable=False),
    Column("content", Text, nullable=False),
    Column("model", String(256)),
    Column("prompt_tokens", BigInt),
    Column("completion_tokens", BigInt),
    Column("ttft_ms", Float),
    Column("duration_ms", Float),
    Column("citations", JSON(none_as_null=True)),
    Column("created_at", Text, nullable=False),
)
memories = _owned(
    "memories",
    Column("owner", String(128), nullable=False, index=True),
    Column("text", Text, nullable=False),
    Column("source", String(16), nullable=False),
    Column("conversation_id", BigInt, ForeignKey("conversations.id", ondelete="SET NULL")),
    Column("embedding", Embedding()),
    Column("embedding_model", String(256)),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
)
memory_versions = _owned(
    "memory_versions",
    _parent("memory_id", "memories.id"),
    Column("version", BigInt, nullable=False),
    Column("text", Text, nullable=False),
    Column("changed_by", String(128), nullable=False),
    Column("changed_at", Text, nullable=False),
    UniqueConstraint("memory_id", "version"),
)

# Agents and MCP servers (migrations 0010, 0011, 0013): Core tables, reached through
# ``agents/definitions.py`` and ``agents/mcp.py``.
agents = _owned(
    "agents",
    Column("owner", String(128), nullable=False),
    Column("name", String(64), nullable=False),
    Column("definition", JSON, nullable=False),  # agents/definitions.py's AgentDefinition
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
    Column("sandbox", String(64), nullable=False),
    UniqueConstraint("owner", "name"),
    Index("ix_agents_sandbox", "sandbox", unique=True),
)
mcp_servers = Table(
    "mcp_servers",
    Base.metadata,
    Column("name", String(32), primary_key=True),
    Column("transport", String(8), nullable=False),
    Column("definition", Text, nullable=False),  # JSON: the rest of agents.mcp.McpServer
    Column("created_at", Text, nullable=False),
    Column("trusted", Boolean, nullable=False, server_default=false()),
)
agent_runs = _owned(
    "agent_runs",
    _parent("agent_id", "agents.id"),
    Column("owner", String(128), nullable=False, index=True),
    Column("definition", JSON, nullable=False),  # the agent as it was at the start
    Column("input", Text, nullable=False),
    Column("status", String(24), nullable=False, index=True),
    Column("answer", Text),
    Column("error", Text),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
)
agent_steps = _owned(
    "agent_steps",
    Column("run_id", BigInt, ForeignKey("agent_runs.id", ondelete="CASCADE"), nullable=False),
    Column("seq", BigInt, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("status", String(24), nullable=False),
    Column("name", String(256), nullable=False),
    Column("call_id", String(64)),
    Column("input", JSON(none_as_null=True)),
    Column("output", JSON(none_as_null=True)),
    Column("decided_by", String(128)),
    Column("reason", Text),
    Column("duration_ms", Float),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
    UniqueConstraint("run_id", "seq"),
)
