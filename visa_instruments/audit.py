"""Every write through the gateway, allowed or refused: when, peer, instance, PV, old → new.

p4p's gateway reports each put on a channel whose `audit` flag is set *before* it checks the put
permission (`pvxs_gw.cpp`, `onPut`), as one text line per put::

    <YYYY-mm-dd HH:MM:SS.nnnnnnnnn> [<method>/<account>]@<ip:port> <PV> as <upstream PV>[ -> <value>]

`VisaAccess` sets the flag on every channel, so refused puts are reported too; whether a put was
allowed is the decision in force when the line arrives (`VisaAccess.may_write`). The line carries
the new value, except for structures such as an enum's: then it is the first upstream value seen
after an allowed put (waited for briefly); the old value is the last one seen before the put
(`ValueHistory`). The claimed account is kept for forensics only,
labelled as claimed: no decision reads it. The table is made by Alembic revisions
(`alembic/versions`, `visa_collab.migrate.upgrade`, own version table), like visa-collab's.
"""
from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Boolean, Column, DateTime, Index, Integer, MetaData, String, Table, Text, inspect, select
from sqlalchemy.engine import Connection, Engine

from visa_collab.db import connect
from visa_collab.migrate import upgrade

ALEMBIC_DIR = Path(__file__).resolve().parent / "alembic"
VERSION_TABLE = "visa_instruments_alembic_version"  # the database may be shared with other services
metadata = MetaData()
writes = Table(
    "visa_instruments_writes", metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime, nullable=False),  # the gateway's clock when the put arrived (local time)
    Column("peer", String(64), nullable=False),
    Column("owner", String(255), nullable=False),  # "" for a peer that is no instance
    Column("server", String(255), nullable=False),
    Column("instrument", String(64), nullable=False),
    Column("pv", String(255), nullable=False),
    Column("old_value", Text),
    Column("new_value", Text),
    Column("allowed", Boolean, nullable=False),
    Column("claimed_account", String(255)),
    Index("ix_visa_instruments_writes_instrument", "instrument", "at"),
)

_PUT = re.compile(r"@(?P<peer>\d{1,3}(?:\.\d{1,3}){3}:\d+) (?P<pv>\S+) as \S+(?: -> (?P<value>.*))?$")
_TYPED = re.compile(r'^[a-z][a-z0-9_]* = (?:"(?P<text>.*)"|(?P<plain>.*))$', re.S)  # pvxs: `double = 280`
_HEAD = re.compile(r"^(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.(?P<ns>\d+))? (?P<who>.*)$", re.S)


@dataclass(frozen=True)
class Put:
    """One put as p4p's audit line tells it."""

    at: datetime
    peer: str  # ip:port
    pv: str
    value: str | None
    account: str  # claimed by the client: never trusted


def parse_audit_line(line: str, is_channel=lambda peer, pv, account: True) -> Put | None:
    """The put of one audit line, or None (an overflow notice, an unreadable line).

    The claimed account (and a string's value) is client text and may itself hold
    "@ip:port PV as PV": of the candidate splits, the first that is a live channel — this
    peer's port, this PV, this exact claimed account (`is_channel`) — is taken."""
    head = _HEAD.match(line)
    if head is None:
        return None
    ns = (head["ns"] or "0")[:6].ljust(6, "0")
    at = datetime.strptime(f"{head['at']}.{ns}", "%Y-%m-%d %H:%M:%S.%f")
    rest = head["who"]
    candidates = []
    for at_sign in [i for i, c in enumerate(rest) if c == "@"]:
        match = _PUT.match(rest, at_sign)
        if match:
            candidates.append((at_sign, match))
    for at_sign, match in candidates:
        account = rest[:at_sign].split("/", 1)[-1]  # "<method>/<account>"; a method has no "/"
        if is_channel(match["peer"], match["pv"], account):
            return Put(at, match["peer"], match["pv"], _plain(match["value"]), account)
    return None


def _plain(value: str | None) -> str | None:
    """`double = 280` → `280`, `string = "abc"` → `abc`; anything else as it is."""
    typed = _TYPED.match(value) if value is not None else None
    if typed is None:
        return value
    return typed["text"] if typed["text"] is not None else typed["plain"]


class ValueHistory:
    """The last few values of each PV the gateway's clients opened, with when the gateway got
    them: the old value of an audited put is the last one received before it."""

    def __init__(self, depth: int = 16) -> None:
        self._seen: dict[str, deque[tuple[float, str]]] = {}
        self._lock = threading.Condition()
        self.depth = depth

    def watching(self, pv: str) -> bool:
        with self._lock:
            return pv in self._seen

    def watch(self, pv: str) -> None:
        with self._lock:
            self._seen.setdefault(pv, deque(maxlen=self.depth))

    def seen(self, pv: str, value: object, at: float | None = None) -> None:
        with self._lock:
            self._seen.setdefault(pv, deque(maxlen=self.depth)).append((at or time.time(), str(value)))
            self._lock.notify_all()

    def before(self, pv: str, at: float) -> str | None:
        with self._lock:
            older = [v for t, v in self._seen.get(pv, ()) if t < at]
        return older[-1] if older else None

    def after(self, pv: str, at: float, timeout: float) -> str | None:
        """The first value received after `at`, waiting up to `timeout` s for it (blocking: the
        audit's own thread): the new value of a put whose audit line has none (an enum's)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                newer = [v for t, v in self._seen.get(pv, ()) if t > at]
                left = deadline - time.monotonic()
                if newer or left <= 0:
                    return newer[0] if newer else None
                self._lock.wait(left)


def display_value(value: object) -> str:
    """A monitored value as the audit shows it: an enum by its choice, a scalar as itself."""
    raw = getattr(value, "raw", None)
    if raw is None:
        return str(value)
    if "value.choices" in raw and "value.index" in raw:
        choices, index = list(raw["value.choices"]), raw["value.index"]
        return choices[index] if 0 <= index < len(choices) else str(index)
    return str(raw["value"])


@dataclass(frozen=True)
class WriteRecord:
    at: datetime
    peer: str
    owner: str
    server: str
    instrument: str
    pv: str
    old_value: str | None
    new_value: str | None
    allowed: bool
    claimed_account: str = ""


def _before_alembic(conn: Connection) -> str | None:
    """A table made by the first gateway (create_all, before its revision) is revision 0001."""
    return "0001" if inspect(conn).has_table(writes.name) else None


class AuditLog:
    """The writes table (SQLite or PostgreSQL through SQLAlchemy); blocking: call it off the loop."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        upgrade(self.engine, ALEMBIC_DIR, VERSION_TABLE, legacy=_before_alembic, name="instrument gateway")

    @classmethod
    def from_url(cls, url: str) -> AuditLog:
        """As visa-collab and visa-ops open theirs (a new SQLite file is private, WAL)."""
        return cls(connect(url))

    def record(self, record: WriteRecord) -> None:
        with self.engine.begin() as conn:
            conn.execute(writes.insert().values(**asdict(record)))

    def rows(self, instrument: str | None = None, limit: int = 500, *, owner: str | None = None,
             server: str | None = None) -> list[dict]:
        """Newest first, as JSON-ready dicts; `owner`/`server` narrow them to one person's instances."""
        query = select(writes).order_by(writes.c.id.desc()).limit(limit)
        for column, value in ((writes.c.instrument, instrument), (writes.c.owner, owner), (writes.c.server, server)):
            if value:
                query = query.where(column == value)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [{**row, "at": row["at"].isoformat(timespec="milliseconds")} for row in rows]
