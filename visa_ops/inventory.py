"""What instances exist, read straight from the hub's own database (read-only).

A sweep over 5,000 instances cannot afford 5,000 REST calls, and JupyterHub's REST API has no
filter by proposal or plan; so reads come from the hub's tables through `jupyterhub.orm`, on a
read-only connection, in an executor (the event loop never waits on the database). Every
*action* still goes through the hub's REST API (`visa_ops.sweep`, `visa_ops.handlers`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jupyterhub import orm
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine, make_url

RUNNING, PENDING, STOPPED = "running", "pending", "stopped"
log = logging.getLogger("visa_ops.inventory")


@dataclass(frozen=True)
class Instance:
    """One named server as the hub knows it, with what lifecycle rules need. Times: naive UTC."""

    owner: str
    server: str
    display_name: str = ""
    proposal: str = ""
    plan: str = ""
    backend: str = ""
    state: str = STOPPED  # running | pending | stopped
    created: datetime | None = None
    started: datetime | None = None
    last_activity: datetime | None = None  # the hub's: real use only (helper "activity")
    owner_roles: tuple[str, ...] = ()  # facility roles, upper case ("USER", "STAFF"), from `role:*` groups
    instruments: tuple[str, ...] = field(default=())
    spawner_id: int | None = None  # the hub's row: a server deleted and made again under the same name is another
    ends_at: datetime | None = None  # a course instance's end (user_options.download_until): its lifetime
    course_ends_at: datetime | None = None  # a course instance's course end: no inactivity rule before it

    @property
    def key(self) -> tuple[str, str]:
        return (self.owner, self.server)


def _naive(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo else dt


def _backend_created(saved: Mapping[str, Any]) -> datetime | None:
    """The backend's own creation time, when its saved state keeps one (epoch seconds)."""
    own = saved.get("backend") if isinstance(saved.get("backend"), Mapping) else {}
    for key in ("created", "started"):
        value = own.get(key) if own else None
        if isinstance(value, (int, float)) and value > 0:
            return datetime.fromtimestamp(value, UTC).replace(tzinfo=None)
    return None


def _backend_name(saved: Mapping[str, Any], plan: str, plan_backends: Mapping[str, str]) -> str:
    """Which backend holds it: the spawner's saved identity, its backend dict, else the plan's."""
    identity = saved.get("identity")
    if isinstance(identity, Mapping) and identity.get("backend"):
        return str(identity["backend"])
    own = saved.get("backend")
    if isinstance(own, Mapping) and own.get("backend"):
        return str(own["backend"])
    return plan_backends.get(plan, "")


def instance_from_row(row: Any, roles: tuple[str, ...], plan_backends: Mapping[str, str]) -> Instance:
    """One spawner row (+ its owner's facility roles) → Instance. Pure; bad fields become blanks."""
    options = row.user_options if isinstance(row.user_options, Mapping) else {}
    saved = row.state if isinstance(row.state, Mapping) else {}
    own = saved.get("backend") if isinstance(saved.get("backend"), Mapping) else {}
    plan = str(options.get("plan") or own.get("plan") or "")
    started = _naive(row.started)
    if row.server_id is not None:
        state = RUNNING
    elif started is not None:
        state = PENDING  # the hub sets `started` when a spawn begins, the server when it is up
    else:
        state = STOPPED
    instruments = options.get("instruments") or ()
    created = [t for t in (_backend_created(saved), started) if t is not None]
    return Instance(
        owner=row.owner, server=row.name, display_name=row.display_name or row.name,
        proposal=str(options.get("proposal") or ""), plan=plan,
        backend=_backend_name(saved, plan, plan_backends), state=state,
        created=min(created) if created else None, started=started,
        last_activity=_naive(row.last_activity), owner_roles=roles,
        instruments=tuple(map(str, instruments)) if isinstance(instruments, (list, tuple)) else (),
        spawner_id=getattr(row, "spawner_id", None), ends_at=_option_time(options.get("download_until")),
        course_ends_at=_option_time(options.get("course_ends_at")) if options.get("course") else None,
    )


def _option_time(value: Any) -> datetime | None:
    """An ISO 8601 time saved in user_options, naive UTC (None if absent or malformed)."""
    try:
        return _naive(datetime.fromisoformat(str(value))) if value else None
    except ValueError:
        return None


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def read_only_engine(url: str) -> Engine:
    """One engine per hub database URL, on connections that cannot write."""
    with _engines_lock:
        if url in _engines:
            return _engines[url]
        u = make_url(url)
        if u.get_backend_name() == "sqlite":
            import sqlite3

            path = u.database or ""

            def creator() -> sqlite3.Connection:
                return sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)

            engine = create_engine("sqlite://", creator=creator, future=True)
        elif u.get_backend_name() == "postgresql":
            engine = create_engine(u, future=True, pool_pre_ping=True,
                                   connect_args={"options": "-c default_transaction_read_only=on"})
        else:
            engine = create_engine(u, future=True, pool_pre_ping=True)
        _engines[url] = engine
        return engine


def load_instances_sync(hub_db_url: str, plan_backends: Mapping[str, str] | None = None,
                        owner: str | None = None, server: str | None = None) -> list[Instance]:
    """Every named server (the default server has no meaning in VISA Hub), with owner roles;
    only `owner`'s (and only `server`) when given."""
    engine = read_only_engine(hub_db_url)
    s, u = orm.Spawner, orm.User
    query = (
        select(u.name.label("owner"), s.id.label("spawner_id"), s.name, s.display_name, s.user_options, s.state,
               s.server_id, s.started, s.last_activity)
        .join(u, s.user_id == u.id)
        .where(s.name != "")
    )
    groups = (
        select(u.name, orm.Group.name)
        .join(orm.user_group_map, orm.user_group_map.c.user_id == u.id)
        .join(orm.Group, orm.Group.id == orm.user_group_map.c.group_id)
        .where(orm.Group.name.like("role:%"))
    )
    if owner is not None:
        query, groups = query.where(u.name == owner), groups.where(u.name == owner)
    if server is not None:
        query = query.where(s.name == server)
    with engine.connect() as conn:
        roles: dict[str, list[str]] = {}
        for user, group in conn.execute(groups):
            roles.setdefault(user, []).append(group.split(":", 1)[1].upper())
        rows = conn.execute(query).all()
    backends = plan_backends or {}
    out = []
    for r in rows:
        try:
            out.append(instance_from_row(r, tuple(sorted(roles.get(r.owner, ()))), backends))
        except Exception:  # one unreadable row (a hand-edited database) must not hide the others
            log.exception("Hub server %s/%s: unreadable record, skipped", r.owner, r.name)
    return out


async def load_instances(hub_db_url: str, plan_backends: Mapping[str, str] | None = None,
                         owner: str | None = None, server: str | None = None) -> list[Instance]:
    """`load_instances_sync` in an executor: the caller's event loop keeps serving."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        None, functools.partial(load_instances_sync, hub_db_url, plan_backends, owner, server))
