"""Agents: their definitions, their runs, and each run's steps (approvals among them).

A run keeps a snapshot of its agent's definition, taken when it starts, so
neither an edit nor anything a tool returns can change the tools or the
approval policy of a run under way. A step is a model call or a tool call;
a tool call that waits for a human is a step too (status
``awaiting_approval``), which is why pending approvals survive restarts.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_agents"
down_revision = "0009_memory"


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False),  # a user's name
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("definition", sa.JSON, nullable=False),  # agents/definitions.py
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Text, nullable=False),
        sa.UniqueConstraint("owner", "name"),
    )
    op.create_table(
        "agent_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "agent_id",
            sa.Integer,
            sa.ForeignKey("agents.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("owner", sa.String(128), nullable=False, index=True),
        sa.Column("definition", sa.JSON, nullable=False),  # the agent as it was at the start
        sa.Column("input", sa.Text, nullable=False),
        # running, awaiting_approval, succeeded, failed, cancelled, step_limit
        sa.Column("status", sa.String(24), nullable=False, index=True),
        sa.Column("answer", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Text, nullable=False),
    )
    op.create_table(
        "agent_steps",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "run_id",
            sa.Integer,
            sa.ForeignKey("agent_runs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),  # model or tool
        # started, completed; for tools also awaiting_approval, approved, rejected
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),  # the model, or the tool
        sa.Column("call_id", sa.String(64)),
        sa.Column("input", sa.JSON),  # a tool's arguments; the tools a model was offered
        sa.Column("output", sa.JSON),  # a model's answer or calls; a tool's result
        sa.Column("decided_by", sa.String(128)),
        sa.Column("reason", sa.Text),
        sa.Column("duration_ms", sa.Float),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Text, nullable=False),
        sa.UniqueConstraint("run_id", "seq"),
    )


def downgrade() -> None:
    op.drop_table("agent_steps")
    op.drop_table("agent_runs")
    op.drop_table("agents")
