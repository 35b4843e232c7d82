"""The initial schema: conversations, messages, chat_requests, clients, tasks.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

A frozen copy of dari/stores/schema.py as it was when migrations were introduced; later
schema changes get revisions of their own, never edits here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets BIGINT (bigserial).
IdType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", IdType, primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.String(128), nullable=False),
        sa.Column("agent_name", sa.String(128), nullable=False),
        sa.Column("thread_id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("project_id", "agent_name", "thread_id", name="uq_conversation"),
    )
    op.create_table(
        "messages",
        sa.Column("id", IdType, primary_key=True, autoincrement=True),
        sa.Column("conversation_id", IdType, sa.ForeignKey("conversations.id"), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("images", sa.JSON, nullable=False),
        sa.Column("steps", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request_id", sa.String(160)),
        sa.Column("node_id", sa.String(200)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_messages_conversation", "messages", ["conversation_id", "id"])
    op.create_index("ix_messages_streaming", "messages", ["status", "node_id"])
    op.create_table(
        "chat_requests",
        sa.Column("user_id", sa.String(256), primary_key=True),
        sa.Column("client_message_id", sa.String(128), primary_key=True),
        sa.Column("request_id", sa.String(160), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "clients",
        sa.Column("client_id", sa.String(128), primary_key=True),
        sa.Column("user_id", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("project_id", sa.String(128), nullable=False),
        sa.Column("agent_name", sa.String(128), nullable=False),
        sa.Column("task", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("result", sa.Text),
        sa.Column("origin_agent", sa.String(128)),
        sa.Column("origin_thread", sa.String(128)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("tasks")
    op.drop_table("clients")
    op.drop_table("chat_requests")
    op.drop_index("ix_messages_streaming", table_name="messages")
    op.drop_index("ix_messages_conversation", table_name="messages")
    op.drop_table("messages")
    op.drop_table("conversations")
