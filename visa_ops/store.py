"""visa-ops' own tables (SQLAlchemy Core): what the hub does not know about instances' lives.

Per-instance lifecycle records (unlimited, extra days, which warnings went out for which
deadline), extension requests, banner notifications, an audit row for every lifecycle action
and a mail log. SQLite (0600, in the hub's state directory) by default, PostgreSQL when
configured. Every call runs in an executor: on PostgreSQL a query is a network round trip, and
the service's event loop must keep serving banners meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    func,
    inspect,
    or_,
    select,
)
from sqlalchemy.engine import Connection, Engine

from visa_collab.db import connect, now
from visa_collab.migrate import upgrade

metadata = MetaData()

lifecycle = Table(
    "visa_ops_lifecycle", metadata,
    Column("owner", String(255), primary_key=True),
    Column("server", String(255), primary_key=True),
    Column("created_at", DateTime, nullable=False),  # first known: the earliest of creation and first sight
    Column("unlimited", Boolean, nullable=False, default=False),
    Column("extra_days", Integer, nullable=False, default=0),  # accepted extensions, summed
    Column("warned_lifetime_for", DateTime),  # the lifetime deadline a warning went out for
    Column("warned_lifetime_at", DateTime),
    Column("warned_inactivity_for", DateTime),  # the inactivity deadline a warning went out for
    Column("warned_inactivity_at", DateTime),
    Column("deleted_at", DateTime),  # asked the hub to delete it (the row goes when the server has gone)
    Column("updated_at", DateTime, nullable=False),
    Column("spawner_id", Integer),  # the hub's spawner row it describes (revision 0002)
)

extensions = Table(
    "visa_ops_extensions", metadata,
    Column("id", Integer, primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("server", String(255), nullable=False),
    Column("requester", String(255), nullable=False),
    Column("days", Integer, nullable=False),
    Column("comment", Text, nullable=False),
    Column("status", String(16), nullable=False),  # pending | accepted | refused | auto-accepted
    Column("created_at", DateTime, nullable=False),
    Column("decided_at", DateTime),
    Column("decided_by", String(255)),
    Column("decision_comment", Text),
)

notifications = Table(
    "visa_ops_notifications", metadata,
    Column("id", Integer, primary_key=True),
    Column("level", String(8), nullable=False),  # info | warn | error
    Column("text", Text, nullable=False),
    Column("starts_at", DateTime, nullable=False),
    Column("ends_at", DateTime),
    Column("created_by", String(255), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("deleted_at", DateTime),
)

audit = Table(
    "visa_ops_audit", metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime, nullable=False),
    Column("actor", String(255), nullable=False),  # a person, or "visa-ops" for the sweep
    Column("action", String(32), nullable=False),  # delete, stop, extend, warn, prune...
    Column("owner", String(255)),
    Column("server", String(255)),
    Column("reason", String(64)),  # lifetime | inactivity | admin | retention | ...
    Column("outcome", String(16), nullable=False),  # ok | failed | refused
    Column("detail", Text),  # JSON
)

mail_log = Table(
    "visa_ops_mail", metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime, nullable=False),
    Column("to_addr", String(320), nullable=False),
    Column("subject", Text, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("owner", String(255)),
    Column("server", String(255)),
    Column("outcome", String(16), nullable=False),  # sent | failed
    Column("error", Text),
)

PENDING, ACCEPTED, REFUSED, AUTO_ACCEPTED = "pending", "accepted", "refused", "auto-accepted"
_UNSET = {"warned_lifetime_for": None, "warned_lifetime_at": None, "warned_inactivity_for": None,
          "warned_inactivity_at": None, "deleted_at": None}
T = TypeVar("T")


ALEMBIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "alembic")
VERSION_TABLE = "visa_ops_alembic_version"


def _before_alembic(conn: Connection) -> str | None:
    """A database made by the first visa-ops commits (tables created directly) is revision 0001."""
    return "0001" if inspect(conn).has_table(lifecycle.name) else None


def migrate(engine: Engine) -> str | None:
    """Bring the database to the newest Alembic revision (`visa_collab.migrate.upgrade`)."""
    return upgrade(engine, ALEMBIC_DIR, VERSION_TABLE, legacy=_before_alembic, name="visa-ops")


def _another_server(record: dict, created: datetime | None, spawner_id: int | None) -> bool:
    """Does `record` describe an earlier server of the same name? Its hub row differs, or we had
    it deleted and this one was created since (SQLite may give a new row the old one's id)."""
    if spawner_id is not None and record.get("spawner_id") not in (None, spawner_id):
        return True
    deleted = record.get("deleted_at")
    return bool(deleted and created and created > deleted)


def _dumps(detail: dict | None) -> str | None:
    return json.dumps(detail, sort_keys=True, default=str) if detail else None


def in_executor(method: Callable[..., T]) -> Callable[..., Any]:
    """Make a synchronous database method awaitable, run in the default executor."""

    @functools.wraps(method)
    async def wrapper(self: Store, *args: Any, **kw: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(method, self, *args, **kw))

    wrapper.sync = method  # type: ignore[attr-defined]  # for callers already in a thread
    return wrapper


class Store:
    """The service's records. Methods are awaitable (executor); `.sync` variants for threads."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = now) -> None:
        self.engine = engine
        self.clock = clock

    @classmethod
    def from_url(cls, url: str, clock: Callable[[], datetime] = now) -> Store:
        engine = connect(url)
        migrate(engine)
        return cls(engine, clock)

    # -- lifecycle records ---------------------------------------------------------------------
    def records_sync(self, owner: str | None = None) -> dict[tuple[str, str], dict]:
        q = select(lifecycle) if owner is None else select(lifecycle).where(lifecycle.c.owner == owner)
        with self.engine.connect() as conn:
            return {(r.owner, r.server): dict(r._mapping) for r in conn.execute(q)}

    records = in_executor(records_sync)

    def record_sync(self, owner: str, server: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(lifecycle).where(lifecycle.c.owner == owner,
                                                       lifecycle.c.server == server)).first()
        return dict(row._mapping) if row else None

    record = in_executor(record_sync)

    def upsert_sync(self, owner: str, server: str, created_at: datetime | None = None,
                    spawner_id: int | None = None, **values: Any) -> dict:
        """Create the record if missing (created_at: given, else now), then set `values`. A record
        of another hub server of the same name (deleted, then made again) starts afresh."""
        at = self.clock()
        with self.engine.begin() as conn:
            where = and_(lifecycle.c.owner == owner, lifecycle.c.server == server)
            row = conn.execute(select(lifecycle).where(where)).first()
            if row is not None and _another_server(dict(row._mapping), created_at, spawner_id):
                conn.execute(lifecycle.delete().where(where))
                row = None
            if row is None:
                fresh = {"unlimited": False, "extra_days": 0, **values}
                conn.execute(lifecycle.insert().values(owner=owner, server=server, created_at=created_at or at,
                                                       updated_at=at, spawner_id=spawner_id, **fresh))
            elif values or (spawner_id is not None and row.spawner_id is None):
                ids = {"spawner_id": spawner_id} if spawner_id is not None else {}
                conn.execute(lifecycle.update().where(where).values(updated_at=at, **ids, **values))
            return dict(conn.execute(select(lifecycle).where(where)).first()._mapping)

    upsert = in_executor(upsert_sync)

    def ensure_records_sync(self, seen: Iterable[tuple], prune: bool = False) -> dict[tuple[str, str], dict]:
        """Records for every ``(owner, server, created[, spawner_id])`` seen, made in one
        transaction; a record of an earlier server of the same name starts afresh; with `prune`
        (a full sweep), records of servers the hub no longer has go. Returns every record."""
        at = self.clock()
        existing = self.records_sync()
        current: dict[tuple[str, str], tuple[datetime | None, int | None]] = {}
        for o, s, c, *rest in seen:
            current[(o, s)] = (c, rest[0] if rest else None)
        stale = [k for k, (c, sid) in current.items() if k in existing and _another_server(existing[k], c, sid)]
        gone = [k for k in existing if k not in current] if prune else []
        new = [{"owner": o, "server": s, "created_at": min(c, at) if c else at, "unlimited": False,
                "extra_days": 0, "updated_at": at, "spawner_id": sid}
               for (o, s), (c, sid) in current.items() if (o, s) not in existing or (o, s) in stale]
        if stale or gone or new:
            with self.engine.begin() as conn:
                for o, s in stale + gone:
                    conn.execute(lifecycle.delete().where(lifecycle.c.owner == o, lifecycle.c.server == s))
                    existing.pop((o, s), None)
                if new:
                    conn.execute(lifecycle.insert(), new)
            existing.update({(r["owner"], r["server"]): {**r, **_UNSET} for r in new})
        return existing

    ensure_records = in_executor(ensure_records_sync)

    def add_extra_days_sync(self, owner: str, server: str, days: int) -> dict:
        rec = self.upsert_sync(owner, server)
        return self.upsert_sync(owner, server, extra_days=rec["extra_days"] + days)

    add_extra_days = in_executor(add_extra_days_sync)

    # -- extension requests --------------------------------------------------------------------
    def add_extension_sync(self, owner: str, server: str, requester: str, days: int, comment: str,
                           status: str = PENDING) -> dict:
        at = self.clock()
        decided = status != PENDING
        with self.engine.begin() as conn:
            rid = conn.execute(extensions.insert().values(
                owner=owner, server=server, requester=requester, days=days, comment=comment, status=status,
                created_at=at, decided_at=at if decided else None, decided_by="visa-ops" if decided else None,
                decision_comment="accepted automatically (plan rule)" if decided else None,
            )).inserted_primary_key[0]
        return self.extension_sync(rid)

    add_extension = in_executor(add_extension_sync)

    def extension_sync(self, rid: int) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(extensions).where(extensions.c.id == rid)).first()
        return dict(row._mapping) if row else None

    extension = in_executor(extension_sync)

    def list_extensions_sync(self, status: str | None = None, owner: str | None = None, server: str | None = None,
                        limit: int = 500) -> list[dict]:
        q = select(extensions).order_by(extensions.c.created_at.desc(), extensions.c.id.desc()).limit(limit)
        if status:
            q = q.where(extensions.c.status == status)
        if owner is not None:
            q = q.where(extensions.c.owner == owner)
        if server is not None:
            q = q.where(extensions.c.server == server)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    list_extensions = in_executor(list_extensions_sync)

    def latest_extensions_sync(self, owner: str | None = None) -> dict[tuple[str, str], dict]:
        """The newest request of each instance (one query), for listings; `owner`'s only if given."""
        newest = select(func.max(extensions.c.id)).group_by(extensions.c.owner, extensions.c.server)
        if owner is not None:
            newest = newest.where(extensions.c.owner == owner)
        with self.engine.connect() as conn:
            rows = conn.execute(select(extensions).where(extensions.c.id.in_(newest)))
            return {(r.owner, r.server): dict(r._mapping) for r in rows}

    latest_extensions = in_executor(latest_extensions_sync)

    def decide_extension_sync(self, rid: int, status: str, by: str, comment: str) -> dict | None:
        """Decide a pending request; None when it is not pending any more (decided twice)."""
        at = self.clock()
        with self.engine.begin() as conn:
            done = conn.execute(extensions.update().where(extensions.c.id == rid, extensions.c.status == PENDING)
                                .values(status=status, decided_at=at, decided_by=by, decision_comment=comment))
            if done.rowcount != 1:
                return None
        return self.extension_sync(rid)

    decide_extension = in_executor(decide_extension_sync)

    # -- notifications -------------------------------------------------------------------------
    def add_notification_sync(self, level: str, text: str, starts_at: datetime, ends_at: datetime | None,
                              by: str) -> dict:
        with self.engine.begin() as conn:
            nid = conn.execute(notifications.insert().values(
                level=level, text=text, starts_at=starts_at, ends_at=ends_at, created_by=by,
                created_at=self.clock())).inserted_primary_key[0]
            return dict(conn.execute(select(notifications).where(notifications.c.id == nid)).first()._mapping)

    add_notification = in_executor(add_notification_sync)

    def list_notifications_sync(self, active_at: datetime | None = None) -> list[dict]:
        """Every notification not deleted, or only those showing at `active_at`."""
        q = select(notifications).where(notifications.c.deleted_at.is_(None)).order_by(notifications.c.starts_at)
        if active_at is not None:
            q = q.where(notifications.c.starts_at <= active_at,
                        or_(notifications.c.ends_at.is_(None), notifications.c.ends_at > active_at))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    list_notifications = in_executor(list_notifications_sync)

    def delete_notification_sync(self, nid: int) -> bool:
        with self.engine.begin() as conn:
            done = conn.execute(notifications.update().where(notifications.c.id == nid,
                                                             notifications.c.deleted_at.is_(None))
                                .values(deleted_at=self.clock()))
            return done.rowcount == 1

    delete_notification = in_executor(delete_notification_sync)

    # -- audit and mail log --------------------------------------------------------------------
    def add_audit_sync(self, actor: str, action: str, owner: str | None = None, server: str | None = None,
                   reason: str | None = None, outcome: str = "ok", detail: dict | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(audit.insert().values(at=self.clock(), actor=actor, action=action, owner=owner,
                                               server=server, reason=reason, outcome=outcome,
                                               detail=_dumps(detail)))

    add_audit = in_executor(add_audit_sync)

    def audit_rows_sync(self, owner: str | None = None, server: str | None = None, action: str | None = None,
                        limit: int = 500) -> list[dict]:
        q = select(audit).order_by(audit.c.at.desc(), audit.c.id.desc()).limit(limit)
        if owner is not None:
            q = q.where(audit.c.owner == owner)
        if server is not None:
            q = q.where(audit.c.server == server)
        if action is not None:
            q = q.where(audit.c.action == action)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    audit_rows = in_executor(audit_rows_sync)

    def log_mail_sync(self, to_addr: str, subject: str, kind: str, owner: str | None, server: str | None,
                      outcome: str, error: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(mail_log.insert().values(at=self.clock(), to_addr=to_addr, subject=subject, kind=kind,
                                                  owner=owner, server=server, outcome=outcome, error=error))

    log_mail = in_executor(log_mail_sync)

    def mail_rows_sync(self, limit: int = 200) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                select(mail_log).order_by(mail_log.c.id.desc()).limit(limit))]

    mail_rows = in_executor(mail_rows_sync)
