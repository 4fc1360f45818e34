"""A course's broadcasts are kept in the database: a restart of the service no longer loses the
banner. Rows are never deleted (a handful per course), so a message id is never reused and a
participant's "dismissed" id never hides a later message.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "visa_training_broadcasts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("course", sa.String(24), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("sent_by", sa.String(255), nullable=False),
        sa.Column("sent_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("cleared_at", sa.DateTime),
    )
    op.create_index("ix_visa_training_broadcasts_course", "visa_training_broadcasts", ["course"])


def downgrade() -> None:
    op.drop_table("visa_training_broadcasts")
