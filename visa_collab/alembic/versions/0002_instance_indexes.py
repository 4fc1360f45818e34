"""Per-instance audit queries (owner/server, by time) and active-grant look-ups.

What ``visa_collab_schema`` version 2 added before the service used Alembic.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_visa_collab_audit_instance", "visa_collab_audit", ["owner", "server", "at"])
    op.create_index("ix_visa_collab_grants_instance", "visa_collab_grants", ["owner", "server", "member"])


def downgrade() -> None:
    op.drop_index("ix_visa_collab_grants_instance", table_name="visa_collab_grants")
    op.drop_index("ix_visa_collab_audit_instance", table_name="visa_collab_audit")
