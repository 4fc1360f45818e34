"""visa-ops' first tables: lifecycle records, extension requests, notifications, audit, mail log.

Frozen here: later changes to `visa_ops.store` go into new revisions, never into this one.

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
        "visa_ops_lifecycle",
        sa.Column("owner", NAME, primary_key=True),
        sa.Column("server", NAME, primary_key=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("unlimited", sa.Boolean, nullable=False),
        sa.Column("extra_days", sa.Integer, nullable=False),
        sa.Column("warned_lifetime_for", sa.DateTime),
        sa.Column("warned_lifetime_at", sa.DateTime),
        sa.Column("warned_inactivity_for", sa.DateTime),
        sa.Column("warned_inactivity_at", sa.DateTime),
        sa.Column("deleted_at", sa.DateTime),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "visa_ops_extensions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner", NAME, nullable=False),
        sa.Column("server", NAME, nullable=False),
        sa.Column("requester", NAME, nullable=False),
        sa.Column("days", sa.Integer, nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("decided_at", sa.DateTime),
        sa.Column("decided_by", NAME),
        sa.Column("decision_comment", sa.Text),
    )
    op.create_index("ix_visa_ops_extensions_instance", "visa_ops_extensions", ["owner", "server", "status"])
    op.create_table(
        "visa_ops_notifications",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("starts_at", sa.DateTime, nullable=False),
        sa.Column("ends_at", sa.DateTime),
        sa.Column("created_by", NAME, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("deleted_at", sa.DateTime),
    )
    op.create_table(
        "visa_ops_audit",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("actor", NAME, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("owner", NAME),
        sa.Column("server", NAME),
        sa.Column("reason", sa.String(64)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text),
    )
    op.create_index("ix_visa_ops_audit_instance", "visa_ops_audit", ["owner", "server", "at"])
    op.create_table(
        "visa_ops_mail",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("to_addr", sa.String(320), nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("owner", NAME),
        sa.Column("server", NAME),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
    )


def downgrade() -> None:
    for table in ("visa_ops_mail", "visa_ops_audit", "visa_ops_notifications", "visa_ops_extensions",
                  "visa_ops_lifecycle"):
        op.drop_table(table)
