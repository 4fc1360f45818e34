"""visa-training's first tables: courses, participants, seats.

Frozen here: later changes to `visa_training.store` go into new revisions, never into this one.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

NAME = sa.String(255)


def upgrade() -> None:
    op.create_table(
        "visa_training_courses",
        sa.Column("id", sa.String(24), primary_key=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("trainers", sa.Text, nullable=False),
        sa.Column("starts_at", sa.DateTime, nullable=False),
        sa.Column("ends_at", sa.DateTime, nullable=False),
        sa.Column("plan", NAME, nullable=False),
        sa.Column("proposal", sa.String(64)),
        sa.Column("materials", sa.Text, nullable=False),
        sa.Column("guest_seats", sa.Integer, nullable=False),
        sa.Column("download_days", sa.Integer, nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("created_by", NAME, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime),
        sa.Column("started_by", NAME),
        sa.Column("pool", sa.String(24)),
        sa.Column("start_note", sa.Text),
    )
    op.create_table(
        "visa_training_participants",
        sa.Column("course", sa.String(24), primary_key=True),
        sa.Column("user", NAME, primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("display_name", NAME),
        sa.Column("added_at", sa.DateTime, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("removed_at", sa.DateTime),
    )
    op.create_table(
        "visa_training_seats",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("course", sa.String(24), nullable=False),
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("used_at", sa.DateTime),
        sa.Column("used_by", NAME),
    )
    op.create_index("ix_visa_training_seats_course", "visa_training_seats", ["course"])


def downgrade() -> None:
    for table in ("visa_training_seats", "visa_training_participants", "visa_training_courses"):
        op.drop_table(table)
