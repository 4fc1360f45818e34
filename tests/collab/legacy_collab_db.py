"""visa_collab/db.py as released before Alembic (commit e25e02f), frozen: it writes databases
exactly as production did (``visa_collab_schema`` versions 1 and 2), for the migration tests.
Only its tables and migrations are kept; never change them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text, inspect, text
from sqlalchemy.engine import Connection, Engine

metadata = MetaData()

schema = Table(
    "visa_collab_schema", metadata,
    Column("version", Integer, nullable=False),
)

grants = Table(
    "visa_collab_grants", metadata,
    Column("id", Integer, primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("server", String(255), nullable=False),
    Column("member", String(255), nullable=False),
    Column("role", String(16), nullable=False),
    Column("granted_by", String(255), nullable=False),
    Column("source", String(32), nullable=False),  # direct | invitation | request | policy
    Column("created_at", DateTime, nullable=False),
    Column("revoked_at", DateTime),
    Column("revoked_by", String(255)),
    Column("revoke_reason", Text),
)

invitations = Table(
    "visa_collab_invitations", metadata,
    Column("id", Integer, primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("server", String(255), nullable=False),
    Column("role", String(16), nullable=False),
    Column("code_hash", String(64), nullable=False, unique=True),
    Column("created_by", String(255), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Column("max_uses", Integer, nullable=False),
    Column("uses", Integer, nullable=False, default=0),
    Column("revoked_at", DateTime),
)

requests = Table(
    "visa_collab_requests", metadata,
    Column("id", Integer, primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("server", String(255), nullable=False),
    Column("requester", String(255), nullable=False),
    Column("status", String(16), nullable=False),  # pending | full | read-only | rejected | expired
    Column("created_at", DateTime, nullable=False),
    Column("decided_at", DateTime),
    Column("decided_by", String(255)),
)

settings = Table(
    "visa_collab_settings", metadata,
    Column("owner", String(255), primary_key=True),
    Column("server", String(255), primary_key=True),
    Column("owner_away", String(16), nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("updated_by", String(255), nullable=False),
)

audit = Table(
    "visa_collab_audit", metadata,
    Column("id", Integer, primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("server", String(255), nullable=False),
    Column("at", DateTime, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("action", String(48), nullable=False),
    Column("member", String(255)),
    Column("role", String(16)),
    Column("granted_by", String(255)),
    Column("outcome", String(16), nullable=False),  # ok | refused
    Column("detail", Text),  # JSON
    Column("source", String(16), nullable=False),  # service | instance
)


# -- migrations ------------------------------------------------------------------------------

def _v1(conn: Connection) -> None:
    """The first tables."""
    metadata.create_all(conn, tables=[grants, invitations, requests, settings, audit])


def _v2(conn: Connection) -> None:
    """Per-instance audit queries (owner/server, by time) and active-grant look-ups."""
    # plain SQL: the Table objects stay index-free, so v1 creates exactly what v1 shipped
    conn.execute(text(f"CREATE INDEX ix_visa_collab_audit_instance ON {audit.name} (owner, server, at)"))
    conn.execute(text(f"CREATE INDEX ix_visa_collab_grants_instance ON {grants.name} (owner, server, member)"))


MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "create tables", _v1),
    (2, "index audit and grants by instance", _v2),
]
LATEST = MIGRATIONS[-1][0]


class SchemaTooNew(RuntimeError):
    pass


def current_version(conn: Connection) -> int:
    if not inspect(conn).has_table(schema.name):
        return 0
    row = conn.execute(schema.select()).first()
    return row.version if row else 0


def migrate(engine: Engine, target: int = LATEST, log: Any = None) -> int:
    """Bring the database to `target`; returns the version it started from."""
    with engine.begin() as conn:
        start = current_version(conn)
        if start > LATEST:
            raise SchemaTooNew(
                f"the collaboration database is at version {start}, newer than this code ({LATEST})"
            )
        if start == 0:
            schema.create(conn, checkfirst=True)
            conn.execute(schema.insert().values(version=0))
    for version, what, step in MIGRATIONS:
        if start < version <= target:
            with engine.begin() as conn:
                step(conn)
                conn.execute(schema.update().values(version=version))
            if log:
                log.info("visa-collab database migrated to version %d (%s)", version, what)
    return start
