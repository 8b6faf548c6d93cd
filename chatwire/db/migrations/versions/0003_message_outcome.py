"""how an answer ended: chat_messages.outcome

Revision ID: 0003_message_outcome
Revises: 0002_external_identity
Create Date: 2026-12-01 21:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_message_outcome"
down_revision = "0002_external_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # done / stopped / interrupted / failed; NULL while streaming and for messages that are not answers.
    with op.batch_alter_table("chat_messages") as batch:
        batch.add_column(sa.Column("outcome", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chat_messages") as batch:
        batch.drop_column("outcome")
