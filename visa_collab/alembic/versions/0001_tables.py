"""The first tables: grants, invitations, access requests, settings, audit log.

What ``visa_collab_schema`` version 1 created before the service used Alembic (frozen here:
later changes to `visa_collab.db` go into new revisions, never into this one).

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
        "visa_collab_grants",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner", NAME, nullable=False),
        sa.Column("server", NAME, nullable=False),
        sa.Column("member", NAME, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("granted_by", NAME, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("revoked_at", sa.DateTime),
        sa.Column("revoked_by", NAME),
        sa.Column("revoke_reason", sa.Text),
    )
    op.create_table(
        "visa_collab_invitations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner", NAME, nullable=False),
        sa.Column("server", NAME, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_by", NAME, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("max_uses", sa.Integer, nullable=False),
        sa.Column("uses", sa.Integer, nullable=False),
        sa.Column("revoked_at", sa.DateTime),
    )
    op.create_table(
        "visa_collab_requests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner", NAME, nullable=False),
        sa.Column("server", NAME, nullable=False),
        sa.Column("requester", NAME, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("decided_at", sa.DateTime),
        sa.Column("decided_by", NAME),
    )
    op.create_table(
        "visa_collab_settings",
        sa.Column("owner", NAME, primary_key=True),
        sa.Column("server", NAME, primary_key=True),
        sa.Column("owner_away", sa.String(16), nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("updated_by", NAME, nullable=False),
    )
    op.create_table(
        "visa_collab_audit",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner", NAME, nullable=False),
        sa.Column("server", NAME, nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("actor", NAME, nullable=False),
        sa.Column("action", sa.String(48), nullable=False),
        sa.Column("member", NAME),
        sa.Column("role", sa.String(16)),
        sa.Column("granted_by", NAME),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("source", sa.String(16), nullable=False),
    )


def downgrade() -> None:
    for table in ("audit", "settings", "requests", "invitations", "grants"):
        op.drop_table(f"visa_collab_{table}")
