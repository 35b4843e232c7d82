"""Conversations belong to users: scope, owner, shared flag, title; read markers.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

Conversations made before this revision have no recorded owner: they are marked shared, so
everyone who used them keeps seeing them (see docs/DESIGN.md, "Conversations and ownership").

The unique constraint of ``conversations`` gains ``scope``. SQLite cannot alter a constraint:
the table is copied, and since ``messages`` refers to it and foreign keys are enforced (they
cannot be switched off inside the migration's transaction), ``messages`` is copied too, onto
the new table, before the old ones are dropped; renaming the copies makes SQLite rewrite the
reference (SQLite 3.26 and later).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

IdType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
KEY = ["project_id", "agent_name", "thread_id"]
# The columns of both tables as revision 0002 left them.
CONVERSATION_COLUMNS = ["id", *KEY, "created_at"]
MESSAGE_COLUMNS = [
    "id",
    "conversation_id",
    "role",
    "content",
    "images",
    "steps",
    "status",
    "request_id",
    "node_id",
    "created_at",
    "updated_at",
    "author",
]


def _rebuild_on_sqlite(owned: bool) -> None:
    """Copy ``conversations`` and ``messages`` into tables of the new (``owned``) or the old
    shape, drop the originals, and take their names."""
    conversation_extra = (
        [
            sa.Column("scope", sa.String(256), nullable=False, server_default=""),
            sa.Column("owner", sa.String(256)),
            sa.Column("shared", sa.Boolean, nullable=False, server_default=sa.false()),
            sa.Column("title", sa.String(200)),
            sa.UniqueConstraint(*KEY, "scope", name="uq_conversation_scope"),
        ]
        if owned
        else [sa.UniqueConstraint(*KEY, name="uq_conversation")]
    )
    op.create_table(
        "conversations_new",
        sa.Column("id", IdType, primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.String(128), nullable=False),
        sa.Column("agent_name", sa.String(128), nullable=False),
        sa.Column("thread_id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        *conversation_extra,
    )
    op.create_table(
        "messages_new",
        sa.Column("id", IdType, primary_key=True, autoincrement=True),
        sa.Column(
            "conversation_id", IdType, sa.ForeignKey("conversations_new.id"), nullable=False
        ),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("images", sa.JSON, nullable=False),
        sa.Column("steps", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request_id", sa.String(160)),
        sa.Column("node_id", sa.String(200)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("author", sa.String(128)),
        *([sa.Column("user_id", sa.String(256))] if owned else []),
    )
    conversation_columns = ", ".join(CONVERSATION_COLUMNS)
    op.execute(
        f"INSERT INTO conversations_new ({conversation_columns}) "
        f"SELECT {conversation_columns} FROM conversations"
    )
    message_columns = ", ".join(MESSAGE_COLUMNS)
    op.execute(
        f"INSERT INTO messages_new ({message_columns}) SELECT {message_columns} FROM messages"
    )
    op.drop_table("messages")  # its indexes go with it
    op.drop_table("conversations")
    op.rename_table("conversations_new", "conversations")
    op.rename_table("messages_new", "messages")
    op.create_index("ix_messages_conversation", "messages", ["conversation_id", "id"])
    op.create_index("ix_messages_streaming", "messages", ["status", "node_id"])
    if owned:
        op.create_index("ix_messages_request", "messages", ["conversation_id", "request_id"])
        op.create_index("ix_conversations_owner", "conversations", ["owner"])


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_on_sqlite(owned=True)
    else:
        with op.batch_alter_table("conversations") as batch:
            batch.add_column(
                sa.Column("scope", sa.String(256), nullable=False, server_default="")
            )
            batch.add_column(sa.Column("owner", sa.String(256), nullable=True))
            batch.add_column(
                sa.Column("shared", sa.Boolean, nullable=False, server_default=sa.false())
            )
            batch.add_column(sa.Column("title", sa.String(200), nullable=True))
            batch.drop_constraint("uq_conversation", type_="unique")
            batch.create_unique_constraint("uq_conversation_scope", [*KEY, "scope"])
            batch.create_index("ix_conversations_owner", ["owner"])
        with op.batch_alter_table("messages") as batch:
            batch.add_column(sa.Column("user_id", sa.String(256), nullable=True))
            batch.create_index("ix_messages_request", ["conversation_id", "request_id"])
    # Everything before owners were recorded was shared by the project: it stays so.
    op.execute(sa.text("UPDATE conversations SET shared = :yes").bindparams(yes=True))
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("origin_scope", sa.String(256), nullable=True))
    op.create_table(
        "conversation_reads",
        sa.Column("user_id", sa.String(256), primary_key=True),
        sa.Column(
            "conversation_id", IdType, sa.ForeignKey("conversations.id"), primary_key=True
        ),
        sa.Column("message_id", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    # Fails if two users have a conversation under the same names (per-user default threads):
    # the old schema cannot hold both.
    op.drop_table("conversation_reads")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("origin_scope")
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_on_sqlite(owned=False)
        return
    with op.batch_alter_table("messages") as batch:
        batch.drop_index("ix_messages_request")
        batch.drop_column("user_id")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_index("ix_conversations_owner")
        batch.drop_constraint("uq_conversation_scope", type_="unique")
        batch.create_unique_constraint("uq_conversation", KEY)
        batch.drop_column("title")
        batch.drop_column("shared")
        batch.drop_column("owner")
        batch.drop_column("scope")
