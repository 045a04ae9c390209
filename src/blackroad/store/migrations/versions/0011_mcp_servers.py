"""MCP tool servers: how to reach each one (a command to run, or a URL), by name.

``definition`` is the JSON of the rest of ``agents.mcp.McpServer`` (command,
arguments and environment, or URL and headers). Header and environment values
may be secrets: the API and the CLI list their names only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_mcp_servers"
down_revision = "0010_agents"


def upgrade() -> None:
    op.create_table(
        "mcp_servers",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("transport", sa.String(8), nullable=False),
        sa.Column("definition", sa.Text, nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),  # ISO-8601 UTC
    )
