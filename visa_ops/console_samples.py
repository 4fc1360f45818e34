"""Samples for the dashboard's plots: how many instances ran, taken at most every few minutes.

The hub keeps no history, so the service keeps its own: one row per sample in a small table of
its database (created on first use, next to the store's tables). `keep_sampling` takes one every
`MIN_GAP` in the service process (started by the first console request, see `console.py`); the
dashboard takes one too; any caller (the sweep) may. A sample within `MIN_GAP` of the last is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, DateTime, Integer, MetaData, Table, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

log = logging.getLogger("visa_ops.console")
MIN_GAP = timedelta(minutes=5)
KEEP = timedelta(days=31)

metadata = MetaData()
samples = Table(
    "visa_ops_samples", metadata,
    Column("at", DateTime, primary_key=True),  # naive UTC, like every time in the service's tables
    Column("running", Integer, nullable=False),
    Column("pending", Integer, nullable=False),
    Column("stopped", Integer, nullable=False),
)

_ready: set[int] = set()
_lock = threading.Lock()


def _ensure_table(engine: Engine) -> None:
    with _lock:
        if id(engine) not in _ready:
            metadata.create_all(engine, checkfirst=True)
            _ready.add(id(engine))


def _naive(at: datetime) -> datetime:
    return at if at.tzinfo is None else at.astimezone(UTC).replace(tzinfo=None)


def record_sample_sync(engine: Engine, at: datetime, by_state: Mapping[str, int]) -> bool:
    """Store one sample unless the last one is younger than MIN_GAP; drop those past KEEP."""
    _ensure_table(engine)
    at = _naive(at)
    try:
        with engine.begin() as conn:
            last = conn.execute(select(func.max(samples.c.at))).scalar()
            if last is not None and at - last < MIN_GAP:
                return False
            conn.execute(samples.insert().values(at=at, **{k: int(by_state.get(k, 0))
                                                            for k in ("running", "pending", "stopped")}))
            conn.execute(samples.delete().where(samples.c.at < at - KEEP))
    except IntegrityError:  # another caller took the sample for this very instant
        return False
    return True


def series_sync(engine: Engine, since: datetime) -> list[tuple[datetime, int]]:
    """(when, instances running) since `since`, oldest first."""
    _ensure_table(engine)
    with engine.connect() as conn:
        rows = conn.execute(select(samples.c.at, samples.c.running)
                            .where(samples.c.at >= _naive(since)).order_by(samples.c.at))
        return [(r.at, r.running) for r in rows]


async def record_sample(engine: Engine, at: datetime, by_state: Mapping[str, int]) -> bool:
    return await asyncio.get_running_loop().run_in_executor(None, record_sample_sync, engine, at, by_state)


async def series(engine: Engine, since: datetime) -> list[tuple[datetime, int]]:
    return await asyncio.get_running_loop().run_in_executor(None, series_sync, engine, since)


async def keep_sampling(take: Callable[[], Awaitable[object]], interval: float = MIN_GAP.total_seconds()) -> None:
    """Call `take` (which records a sample) every `interval` s; failures are logged, never fatal."""
    while True:
        try:
            await take()
        except Exception:
            log.exception("Taking an instance sample failed; trying again in %ss", interval)
        await asyncio.sleep(interval)
