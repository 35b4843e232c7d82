"""Answers keep their tool calls and the questions they asked.

``messages.tools`` (JSON: the latest state of each tool call, ``{tool_call_id, name, state,
arguments, result | error}``) and ``messages.interrupts`` (JSON: each question the answer
asked, ``{interrupt_id, payload, expires_at, state, value?}``). Both nullable: rows written
before stay as they are. An answer paused on a question has status ``interrupted``
(``messages.status`` is a free string: no change needed).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("tools", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("interrupts", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("interrupts")
        batch.drop_column("tools")
