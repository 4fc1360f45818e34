"""The collaboration service's own tables and their migrations (SQLAlchemy Core).

The service keeps its records in its own database (SQLite by default, next to the hub's;
any SQLAlchemy URL works, e.g. the hub's PostgreSQL server). The hub's tables are never
touched: grants live in the hub as shares, made through its REST API; these tables hold what
the hub does not know (who granted what and why, invitations with a use limit, access
requests, settings, the audit log).

Migrations are numbered steps applied in order inside one transaction each; the applied
version is kept in ``visa_collab_schema``. A database newer than this code is refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text, create_engine, event, inspect, text
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


def private_sqlite(url: str) -> None:
    """An SQLite database file (and its journal, WAL and shared-memory files, which SQLite
    creates with the database's mode) readable by its owner only: 0600, made so before first
    use. Other URLs are left alone."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return
    os.close(os.open(u.database, os.O_CREAT | os.O_WRONLY, 0o600))
    for suffix in ("", "-journal", "-wal", "-shm"):
        try:
            os.chmod(u.database + suffix, 0o600)
        except FileNotFoundError:
            pass


def connect(url: str) -> Engine:
    private_sqlite(url)
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()
    return engine


def now() -> datetime:
    """Naive UTC, as stored (SQLite keeps no zone)."""
    return datetime.now(UTC).replace(tzinfo=None)


def iso(dt: datetime | None) -> str | None:
    return dt.replace(tzinfo=UTC).isoformat(timespec="seconds") if dt else None


def dumps(detail: dict | None) -> str | None:
    return json.dumps(detail, sort_keys=True, default=str) if detail else None


__all__ = [
    "audit", "connect", "grants", "invitations", "metadata", "migrate", "now", "requests",
    "settings", "text", "LATEST",
]
