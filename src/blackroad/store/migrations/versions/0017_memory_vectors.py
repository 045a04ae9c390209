"""PostgreSQL: a memory's embedding is a pgvector ``vector`` (nothing changes on SQLite).

Recall compares a query's vector with a user's memories by cosine distance in
SQL: sqlite-vec's ``vec_distance_cosine`` over the float32 bytes on SQLite,
pgvector's ``<=>`` here. The column has no fixed width, since a user's
memories may hold vectors of several embedding models (recall compares only
those of the query's model and width).

Until this revision memories were SQLite-only, so the column holds nothing on
PostgreSQL; were any vector there, dropping it would cost one pass of
embedding, which the next recall makes for every memory without a vector.
``CREATE EXTENSION`` needs a superuser where pgvector is not installed in the
database already.
"""

from __future__ import annotations

from alembic import op

revision = "0017_memory_vectors"
down_revision = "0016_control_planes"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.execute("ALTER TABLE memories ALTER COLUMN embedding TYPE vector USING NULL")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE memories ALTER COLUMN embedding TYPE bytea USING NULL")
