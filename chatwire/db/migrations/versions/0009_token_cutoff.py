"""sign a user out everywhere: users.tokens_valid_after (ms); chatwire's own tokens issued before it are refused

Revision ID: 0009_token_cutoff
Revises: 0006_webhooks
Create Date: 2026-12-02 05:35:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_token_cutoff"
down_revision = "0006_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("tokens_valid_after", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("tokens_valid_after")
