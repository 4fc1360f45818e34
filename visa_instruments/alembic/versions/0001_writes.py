"""The instrument gateway's write audit: every put, allowed or refused.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "visa_instruments_writes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("peer", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("server", sa.String(255), nullable=False),
        sa.Column("instrument", sa.String(64), nullable=False),
        sa.Column("pv", sa.String(255), nullable=False),
        sa.Column("old_value", sa.Text),
        sa.Column("new_value", sa.Text),
        sa.Column("allowed", sa.Boolean, nullable=False),
        sa.Column("claimed_account", sa.String(255)),
    )
    op.create_index("ix_visa_instruments_writes_instrument", "visa_instruments_writes", ["instrument", "at"])


def downgrade() -> None:
    op.drop_table("visa_instruments_writes")
