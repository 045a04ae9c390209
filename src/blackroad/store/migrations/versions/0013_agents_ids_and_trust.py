"""Ids that are never handed out twice, agent sandboxes of their own, sessions, trusted MCP servers.

**Ids never reused.** SQLite gives a new row the largest id plus one, so the
id of the newest row, once deleted, went to the next row, whoever's it was.
Where an id outlives its row (an agent's sandbox on disk, a run's listeners
in the server, a knowledge base named by id in an agent's definition and in
every run's snapshot of it, a document in a stored answer's citations, a
conversation or a memory named by id in a client), the next owner inherited
what was the last one's. The three families of tables whose ids name what a
user owns are rebuilt with ``AUTOINCREMENT``, rows and ids kept, so the
high-water mark (``sqlite_sequence``) starts at the largest id there is:

- agents, agent_runs, agent_steps (a step is also an approval);
- conversations, messages, memories, memory_versions;
- knowledge_bases, knowledge_shares (no id of its own), documents, chunks.

Each family is closed under references (every table pointing at one of them
is in it), which is what makes the rebuild safe with foreign keys enforced:
the old tables are renamed (SQLite renames the references with them), the
new ones created and filled, and the old ones dropped children first, so no
``ON DELETE`` action reaches a new table. Indexes are created anew and
triggers (the full-text indexes' own) replayed as they were written. Users,
keys, groups, nodes and the like are not addressed by id by anyone who could
be another owner, or are never deleted.

**Sandboxes.** ``agents.sandbox`` names an agent's sandbox directory: a random
name for a new agent, never one of another; existing agents keep the
directory they had (their id).

**Sessions.** ``api_keys.session`` marks the keys a login made; a change of
role, a new password or disabling ends them. Keys named ``session`` with an
expiry are taken to be sessions (that is what a login made until now).

**Trusted MCP servers.** ``mcp_servers.trusted``: an admin's word that the
server's read-only claims may be believed (none is, until then).

On PostgreSQL the tables are not rebuilt: a sequence never hands out an id
twice, which is what ``AUTOINCREMENT`` gives SQLite; only the new column is added.

The downgrade drops the new columns; the tables keep ``AUTOINCREMENT``, which
the older code does not notice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.schema import SchemaItem

revision = "0013_agents_ids_and_trust"
down_revision = "0012_node_draining"

_meta = sa.MetaData()
# Referenced, never rebuilt here: declared so the foreign keys below resolve.
sa.Table("groups", _meta, sa.Column("id", sa.Integer, primary_key=True))


def _table(name: str, *items: SchemaItem) -> sa.Table:
    return sa.Table(name, _meta, *items, sqlite_autoincrement=True)


def _id() -> sa.Column[object]:
    return sa.Column("id", sa.Integer, primary_key=True)


def _parent(column: str, target: str, index: bool = True) -> sa.Column[object]:
    """A reference to ``target`` whose rows go with it (``ON DELETE CASCADE``)."""
    return sa.Column(
        column, sa.Integer, sa.ForeignKey(target, ondelete="CASCADE"), nullable=False, index=index
    )


def _text(name: str, length: int | None = None, nullable: bool = False) -> sa.Column[object]:
    kind: sa.types.TypeEngine[str] = sa.Text() if length is None else sa.String(length)
    return sa.Column(name, kind, nullable=nullable)


# The tables as 0009 and 0010 made them, with AUTOINCREMENT (and agents.sandbox).
AGENTS = [
    _table(
        "agents",
        _id(),
        _text("owner", 128),
        _text("name", 64),
        sa.Column("definition", sa.JSON, nullable=False),
        _text("created_at"),
        _text("updated_at"),
        _text("sandbox", 64),
        sa.UniqueConstraint("owner", "name"),
        sa.Index("ix_agents_sandbox", "sandbox", unique=True),
    ),
    _table(
        "agent_runs",
        _id(),
        _parent("agent_id", "agents.id"),
        sa.Column("owner", sa.String(128), nullable=False, index=True),
        sa.Column("definition", sa.JSON, nullable=False),
        _text("input"),
        sa.Column("status", sa.String(24), nullable=False, index=True),
        _text("answer", nullable=True),
        _text("error", nullable=True),
        _text("created_at"),
        _text("updated_at"),
    ),
    _table(
        "agent_steps",
        _id(),
        _parent("run_id", "agent_runs.id", index=False),
        sa.Column("seq", sa.Integer, nullable=False),
        _text("kind", 8),
        _text("status", 24),
        _text("name", 256),
        _text("call_id", 64, nullable=True),
        sa.Column("input", sa.JSON),
        sa.Column("output", sa.JSON),
        _text("decided_by", 128, nullable=True),
        _text("reason", nullable=True),
        sa.Column("duration_ms", sa.Float),
        _text("created_at"),
        _text("updated_at"),
        sa.UniqueConstraint("run_id", "seq"),
    ),
]
CONVERSATIONS = [
    _table(
        "conversations",
        _id(),
        sa.Column("owner", sa.String(128), nullable=False, index=True),
        _text("title"),
        _text("model", 256, nullable=True),
        _text("created_at"),
        _text("updated_at"),
    ),
    _table(
        "messages",
        _id(),
        _parent("conversation_id", "conversations.id"),
        _text("role", 16),
        _text("content"),
        _text("model", 256, nullable=True),
        sa.Column("prompt_tokens", sa.Integer),
        sa.Column("completion_tokens", sa.Integer),
        sa.Column("ttft_ms", sa.Float),
        sa.Column("duration_ms", sa.Float),
        sa.Column("citations", sa.JSON),
        _text("created_at"),
    ),
    _table(
        "memories",
        _id(),
        sa.Column("owner", sa.String(128), nullable=False, index=True),
        _text("text"),
        _text("source", 16),
        sa.Column(
            "conversation_id", sa.Integer, sa.ForeignKey("conversations.id", ondelete="SET NULL")
        ),
        sa.Column("embedding", sa.LargeBinary),
        _text("embedding_model", 256, nullable=True),
        _text("created_at"),
        _text("updated_at"),
    ),
    _table(
        "memory_versions",
        _id(),
        _parent("memory_id", "memories.id"),
        sa.Column("version", sa.Integer, nullable=False),
        _text("text"),
        _text("changed_by", 128),
        _text("changed_at"),
        sa.UniqueConstraint("memory_id", "version"),
    ),
]
KNOWLEDGE = [
    _table(
        "knowledge_bases",
        _id(),
        sa.Column("owner", sa.String(128), nullable=False, index=True),
        _text("name", 128),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        _text("embedding_model", 256),
        sa.Column("dimensions", sa.Integer),
        sa.Column("chunk_tokens", sa.Integer, nullable=False),
        sa.Column("chunk_overlap", sa.Integer, nullable=False),
        _text("created_at"),
        _text("updated_at"),
        sa.UniqueConstraint("owner", "name"),
    ),
    sa.Table(
        "knowledge_shares",
        _meta,
        sa.Column(
            "kb_id",
            sa.Integer,
            sa.ForeignKey("knowledge_bases.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "group_id",
            sa.Integer,
            sa.ForeignKey("groups.id", ondelete="CASCADE"),
            primary_key=True,
            index=True,
        ),
        _text("permission", 8),
    ),
    _table(
        "documents",
        _id(),
        _parent("kb_id", "knowledge_bases.id", index=False),
        _text("name"),
        _text("media_type", 128),
        _text("sha256", 64),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("pages", sa.Integer),
        sa.Column("characters", sa.Integer, nullable=False),
        _text("text"),
        sa.Column("metadata", sa.JSON, nullable=False),
        _text("created_at"),
        _text("updated_at"),
        sa.UniqueConstraint("kb_id", "name"),
    ),
    _table(
        "chunks",
        _id(),
        _parent("document_id", "documents.id"),
        sa.Column("kb_id", sa.Integer, nullable=False, index=True),
        sa.Column("ordinal", sa.Integer, nullable=False),
        sa.Column("page", sa.Integer),
        sa.Column("char_start", sa.Integer, nullable=False),
        sa.Column("char_end", sa.Integer, nullable=False),
        _text("heading", nullable=True),
        sa.Column("tokens", sa.Integer, nullable=False),
        _text("text"),
    ),
]


def _rebuild(family: Sequence[sa.Table], computed: Mapping[str, str] = {}) -> None:
    """Rebuild ``family`` (parents first) as declared above, every row and id kept.

    ``computed``: SQL giving a new column its value from the old row. The table
    and index names are this module's constants, never input, so building SQL
    from them is safe.
    """
    bind = op.get_bind()
    triggers: list[str] = []
    for table in family:
        schema = bind.exec_driver_sql(
            "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL"
            " AND type IN ('index', 'trigger')",
            (table.name,),
        ).all()
        triggers += [sql for kind, _, sql in schema if kind == "trigger"]
        for kind, name, _ in schema:
            if kind == "index":  # index names are global: the new table's are the same
                op.execute(f'DROP INDEX "{name}"')
        op.execute(f'ALTER TABLE "{table.name}" RENAME TO "_old_{table.name}"')
    for table in family:
        table.create(bind)  # with its indexes
    for table in family:
        names = ", ".join(f'"{column.name}"' for column in table.columns)
        values = ", ".join(
            computed.get(column.name, f'"{column.name}"') for column in table.columns
        )
        op.execute(
            f'INSERT INTO "{table.name}" ({names}) SELECT {values} FROM "_old_{table.name}"'  # noqa: S608
            " ORDER BY rowid"
        )
    for table in reversed(family):  # children first: no ON DELETE action reaches a new table
        op.execute(f'DROP TABLE "_old_{table.name}"')
    for sql in triggers:
        op.execute(sql)


def _flag(name: str) -> sa.Column[bool]:
    return sa.Column(name, sa.Boolean, nullable=False, server_default=sa.false())


def _add_sandboxes() -> None:
    """``agents.sandbox`` added in place, each existing agent's its id (PostgreSQL)."""
    op.add_column("agents", _text("sandbox", 64, nullable=True))
    op.execute("UPDATE agents SET sandbox = CAST(id AS TEXT)")
    op.alter_column("agents", "sandbox", nullable=False)
    op.create_index("ix_agents_sandbox", "agents", ["sandbox"], unique=True)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(AGENTS, {"sandbox": "CAST(id AS TEXT)"})
        _rebuild(CONVERSATIONS)
        _rebuild(KNOWLEDGE)
    else:
        _add_sandboxes()
    with op.batch_alter_table("api_keys") as table:
        table.add_column(
            sa.Column("session", sa.Boolean, nullable=False, server_default=sa.false())
        )
    keys = sa.table(
        "api_keys",
        sa.column("session", sa.Boolean),
        sa.column("name", sa.String),
        sa.column("expires_at", sa.DateTime(timezone=True)),
    )
    op.execute(
        keys.update()
        .where(keys.c.name == "session", keys.c.expires_at.is_not(None))
        .values(session=True)
    )
    with op.batch_alter_table("mcp_servers") as table:
        table.add_column(
            sa.Column("trusted", sa.Boolean, nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("mcp_servers") as table:
        table.drop_column("trusted")
    with op.batch_alter_table("api_keys") as table:
        table.drop_column("session")
    op.drop_index("ix_agents_sandbox", "agents")
    op.execute("ALTER TABLE agents DROP COLUMN sandbox")  # SQLite's own: nothing refers to it
