"""The collaboration service's own tables and their migrations (SQLAlchemy Core).

The service keeps its records in its own database (SQLite by default, next to the hub's;
any SQLAlchemy URL works, e.g. the hub's PostgreSQL server). The hub's tables are never
touched: grants live in the hub as shares, made through its REST API; these tables hold what
the hub does not know (who granted what and why, invitations with a use limit, access
requests, settings, the audit log).

The tables are made and changed by Alembic revisions (``alembic/versions``), applied by
`migrate` when the service starts (`visa_collab.migrate`); the revision is kept in
``visa_collab_alembic_version``. A database written before Alembic (``visa_collab_schema``
version 1 or 2) is recognised and stamped; one newer than this code is refused.

The service never queries on its event loop: `Database.run` sends each unit of work to a
worker thread.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import URL, Connection, Engine, RowMapping, make_url
from sqlalchemy.sql import Executable

from . import migrate as migrations
from .migrate import SchemaTooNew

ALEMBIC_DIR = Path(__file__).resolve().parent / "alembic"
# not Alembic's default "alembic_version": the database may be shared (with the hub, with visa-ops)
VERSION_TABLE = "visa_collab_alembic_version"
# before Alembic: visa_collab_schema.version -> the revision that creates the same schema
LEGACY_TABLE = "visa_collab_schema"
LEGACY_REVISIONS = {1: "0001", 2: "0002"}
# written into visa_collab_schema once Alembic owns the database, so that older code refuses it
LEGACY_RETIRED = 1000

metadata = MetaData()

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
    Index("ix_visa_collab_grants_instance", "owner", "server", "member"),
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
    Index("ix_visa_collab_audit_instance", "owner", "server", "at"),
)


# -- migrations ------------------------------------------------------------------------------

def _legacy_revision(conn: Connection) -> str | None:
    """The revision a database written before Alembic matches (from ``visa_collab_schema``).

    Its version is then set to `LEGACY_RETIRED`: code from before Alembic, started on this
    database by mistake, refuses it as too new instead of misreading it.
    """
    if not inspect(conn).has_table(LEGACY_TABLE):
        return None
    version = conn.execute(text(f"SELECT max(version) FROM {LEGACY_TABLE}")).scalar() or 0
    if version == 0:  # made, but the first tables never were
        return None
    if version not in LEGACY_REVISIONS:
        raise SchemaTooNew(
            f"The collaboration database is at version {version} of its pre-Alembic schema, "
            f"which this version does not know (it knows {sorted(LEGACY_REVISIONS)})."
        )
    conn.execute(text(f"UPDATE {LEGACY_TABLE} SET version = :retired"), {"retired": LEGACY_RETIRED})
    return LEGACY_REVISIONS[version]


def migrate(engine: Engine, log: Any = None) -> str | None:
    """Bring the database to the newest revision; returns the one it started from (None: new).

    `log` is accepted for older callers; progress is logged by `visa_collab.migrate`.
    """
    return migrations.upgrade(engine, ALEMBIC_DIR, VERSION_TABLE, legacy=_legacy_revision, name="collaboration")


def head() -> str:
    """The newest revision of the collaboration tables."""
    return migrations.head(ALEMBIC_DIR)


# -- running queries off the event loop --------------------------------------------------------

T = TypeVar("T")
P = ParamSpec("P")


class Database:
    """The service's engine behind a small pool of worker threads.

    Every query blocks its thread: the drivers installed are synchronous (sqlite3, psycopg2),
    and SQLAlchemy's asyncio extension needs asyncpg or psycopg 3. So each unit of work -- a
    function of one `Connection`, run inside one transaction -- goes to a worker thread and the
    service's event loop keeps serving while PostgreSQL answers (or a lock is waited for).

    SQLite takes one writer at a time, and a transaction that reads and then writes fails at
    once ("database is locked") if another wrote meanwhile: one worker there, so transactions
    queue instead. Other databases get `workers` (4) threads, fewer than the engine's pool of
    connections (5), so a worker never waits for a connection.
    """

    def __init__(self, engine: Engine, workers: int = 4) -> None:
        self.engine = engine
        self.workers = 1 if engine.dialect.name == "sqlite" else workers
        self.executor = ThreadPoolExecutor(self.workers, thread_name_prefix="visa-collab-db")

    async def run(self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(conn, *args, **kwargs)` in a worker thread, in one transaction (committed if it returns)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, partial(self._in_transaction, fn, args, kwargs))

    def _in_transaction(self, fn: Callable[..., T], args: tuple, kwargs: dict) -> T:
        with self.engine.begin() as conn:
            return fn(conn, *args, **kwargs)

    async def all(self, statement: Executable) -> list[RowMapping]:
        """Every row of a query, as mappings (read in a worker thread)."""
        return await self.run(_all, statement)

    async def first(self, statement: Executable) -> RowMapping | None:
        """The first row of a query, or None."""
        return await self.run(_first, statement)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.engine.dispose()


def _all(conn: Connection, statement: Executable) -> list[RowMapping]:
    return list(conn.execute(statement).mappings().all())


def _first(conn: Connection, statement: Executable) -> RowMapping | None:
    return conn.execute(statement).mappings().first()


def private_sqlite(url: str) -> None:
    """An SQLite database file (and its journal, WAL and shared-memory files, which SQLite
    creates with the database's mode) readable by its owner only: 0600, made so before first
    use. Other URLs are left alone."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return
    os.close(os.open(u.database, os.O_CREAT | os.O_WRONLY, 0o600))
    for suffix in ("", "-journal", "-wal", "-shm"):
        try:
            os.chmod(u.database + suffix, 0o600)
        except FileNotFoundError:
            pass


def engine_url(url: str) -> URL:
    """`url` with a plain ``postgresql://`` meaning psycopg2, the driver the ``production``
    extra installs (SQLAlchemy 2.1 would pick psycopg 3, which is not installed)."""
    u = make_url(url)
    return u.set(drivername="postgresql+psycopg2") if u.drivername == "postgresql" else u


def connect(url: str) -> Engine:
    private_sqlite(url)
    engine = create_engine(engine_url(url), future=True)
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
    "Database", "SchemaTooNew", "audit", "connect", "grants", "head", "invitations", "metadata", "migrate",
    "now", "requests", "settings", "text",
]
