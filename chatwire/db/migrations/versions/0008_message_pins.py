"""channel message pins

Revision ID: 0008_message_pins
Revises: 0003_message_outcome
Create Date: 2026-12-01 22:35:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_message_pins"
down_revision = "0003_message_outcome"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("channel_messages") as batch:
        batch.add_column(sa.Column("is_pinned", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("pinned_by", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("pinned_at", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("channel_messages") as batch:
        batch.drop_column("pinned_at")
        batch.drop_column("pinned_by")
        batch.drop_column("is_pinned")
