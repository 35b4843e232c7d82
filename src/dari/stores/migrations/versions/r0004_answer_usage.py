"""Answers keep the model's reasoning, their usage and how they ended.

``messages.reasoning`` (text, apart from ``content``), ``messages.usage`` (JSON:
``prompt_tokens``, ``completion_tokens``, ``total_tokens``, ``reasoning_tokens``?) and
``messages.finish_reason`` (``stop``, ``length``, ``content_filter``, ``cancelled``, ``error``).
All nullable: rows written before stay as they are.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("reasoning", sa.Text(), nullable=True))
        batch.add_column(sa.Column("usage", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("finish_reason", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("finish_reason")
        batch.drop_column("usage")
        batch.drop_column("reasoning")
