"""Lifecycle records name the hub's spawner row they describe: a server deleted and made again
under the same name starts with a fresh record (its own lifetime, no old warnings).

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
    with op.batch_alter_table("visa_ops_lifecycle") as batch:
        batch.add_column(sa.Column("spawner_id", sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("visa_ops_lifecycle") as batch:
        batch.drop_column("spawner_id")
