"""Alembic environment of the collaboration service's tables; `visa_collab.migrate.upgrade` runs it."""

from visa_collab.db import metadata
from visa_collab.migrate import run_env

run_env(metadata)
