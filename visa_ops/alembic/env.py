"""Alembic environment of visa-ops' tables; `visa_collab.migrate.upgrade` runs it (`visa_ops.store.migrate`)."""

from visa_collab.migrate import run_env
from visa_ops.store import metadata

run_env(metadata)
