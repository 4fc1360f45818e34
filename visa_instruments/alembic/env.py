"""Alembic environment of the gateway's audit table; `visa_collab.migrate.upgrade` runs it (`audit.AuditLog`)."""

from visa_collab.migrate import run_env
from visa_instruments.audit import metadata

run_env(metadata)
