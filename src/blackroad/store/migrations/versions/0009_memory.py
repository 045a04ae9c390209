"""Memory: conversations and their messages, long-term memories, knowledge bases.

Full-text indexes are FTS5 tables over their content tables (external
content, kept in step by triggers), so a row and its index entry are written
in the same transaction. Vectors live in sqlite-vec ``vec0`` tables created
per knowledge base (``memory/index.py``), because each base chooses its
embedding model and so its dimension.

On PostgreSQL a full-text index is a GIN index over the text's ``tsvector``
(the ``english`` configuration: Snowball stemming, as FTS5's porter
tokenizer stems), kept in step by PostgreSQL itself.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_memory"
down_revision = "0008_audit_log"


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", sa.Text, nullable=False),  # ISO-8601 UTC
        sa.Column("updated_at", sa.Text, nullable=False),
    ]


def _fts(table: str, content: str, columns: tuple[str, ...], key: str = "id") -> None:
    """An external-content FTS5 index over ``content``'s ``columns``, with its triggers.

    The names are this module's constants, never input, so building SQL from them is safe.
    """
    if op.get_bind().dialect.name == "postgresql":
        document = " || ' ' || ".join(columns)
        op.execute(
            f"CREATE INDEX {table} ON {content} USING gin (to_tsvector('english', {document}))"
        )
        return
    names = ", ".join(columns)
    new = ", ".join(f"new.{c}" for c in columns)
    old = ", ".join(f"old.{c}" for c in columns)
    op.execute(
        f"CREATE VIRTUAL TABLE {table} USING fts5({names}, content='{content}', "
        f"content_rowid='{key}', tokenize='porter unicode61 remove_diacritics 2')"
    )
    op.execute(
        f"CREATE TRIGGER {table}_ai AFTER INSERT ON {content} BEGIN "  # noqa: S608
        f"INSERT INTO {table}(rowid, {names}) VALUES (new.{key}, {new}); END"
    )
    op.execute(
        f"CREATE TRIGGER {table}_ad AFTER DELETE ON {content} BEGIN "  # noqa: S608
        f"INSERT INTO {table}({table}, rowid, {names}) VALUES ('delete', old.{key}, {old}); END"
    )
    op.execute(
        f"CREATE TRIGGER {table}_au AFTER UPDATE ON {content} BEGIN "  # noqa: S608
        f"INSERT INTO {table}({table}, rowid, {names}) VALUES ('delete', old.{key}, {old}); "
        f"INSERT INTO {table}(rowid, {names}) VALUES (new.{key}, {new}); END"
    )


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False, index=True),  # a user's name
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("model", sa.String(256)),
        *_timestamps(),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "conversation_id",
            sa.Integer,
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("model", sa.String(256)),  # the model that wrote an assistant message
        sa.Column("prompt_tokens", sa.Integer),
        sa.Column("completion_tokens", sa.Integer),
        sa.Column("ttft_ms", sa.Float),
        sa.Column("duration_ms", sa.Float),
        sa.Column("citations", sa.JSON),  # the passages an answer used
        sa.Column("created_at", sa.Text, nullable=False),
    )
    _fts("messages_fts", "messages", ("content",))

    op.create_table(
        "memories",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False, index=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),  # "user" or "extracted"
        sa.Column(
            "conversation_id",  # where an extracted memory came from
            sa.Integer,
            sa.ForeignKey("conversations.id", ondelete="SET NULL"),
        ),
        # Its embedding (float32, little-endian) and the model that made it.
        sa.Column("embedding", sa.LargeBinary),
        sa.Column("embedding_model", sa.String(256)),
        *_timestamps(),
    )
    op.create_table(
        "memory_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "memory_id",
            sa.Integer,
            sa.ForeignKey("memories.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("changed_by", sa.String(128), nullable=False),
        sa.Column("changed_at", sa.Text, nullable=False),
        sa.UniqueConstraint("memory_id", "version"),
    )

    op.create_table(
        "knowledge_bases",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False, index=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("embedding_model", sa.String(256), nullable=False),
        sa.Column("dimensions", sa.Integer),  # known once the first chunk is embedded
        sa.Column("chunk_tokens", sa.Integer, nullable=False),
        sa.Column("chunk_overlap", sa.Integer, nullable=False),
        *_timestamps(),
        sa.UniqueConstraint("owner", "name"),
    )
    op.create_table(
        "knowledge_shares",
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
        sa.Column("permission", sa.String(8), nullable=False),  # "read" or "write"
    )
    op.create_table(
        "documents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "kb_id",
            sa.Integer,
            sa.ForeignKey("knowledge_bases.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.Text, nullable=False),  # the file name it was uploaded as
        sa.Column("media_type", sa.String(128), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("pages", sa.Integer),
        sa.Column("characters", sa.Integer, nullable=False),
        # The extracted text the chunks' offsets point into (the original file is on disk).
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        *_timestamps(),
        sa.UniqueConstraint("kb_id", "name"),
    )
    op.create_table(
        "chunks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "document_id",
            sa.Integer,
            sa.ForeignKey("documents.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("kb_id", sa.Integer, nullable=False, index=True),
        sa.Column("ordinal", sa.Integer, nullable=False),  # its place in the document
        sa.Column("page", sa.Integer),  # 1-based, for paged formats (PDF)
        # Character offsets into the document's extracted text: text == full[char_start:char_end].
        sa.Column("char_start", sa.Integer, nullable=False),
        sa.Column("char_end", sa.Integer, nullable=False),
        sa.Column("heading", sa.Text),  # the section it sits under, if any
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
    )
    _fts("chunks_fts", "chunks", ("text",))
