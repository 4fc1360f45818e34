"""A short-lived cache in front of a remote catalogue.

A login asks the catalogue six or seven questions, and a class of fifty students
logging in at nine o'clock asks them fifty times: the cache answers repeats for a
few seconds and lets concurrent identical questions share one query. Values are
immutable, so sharing them is safe; failures are never cached.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from datetime import date
from typing import Any, TypeVar

from traitlets import Float, Instance, Integer

from .catalogue import Catalogue, Experiment, Instrument, Person, Proposal

T = TypeVar("T")


def _ids(ids: Iterable[str]) -> tuple[str, ...]:
    """Normalise a batch of ids into a cache key (order and repeats do not matter)."""
    return tuple(sorted(set(ids)))


class CachedCatalogue(Catalogue):
    """Wraps another catalogue, caching each answer for `ttl` seconds."""

    ttl = Float(
        60.0,
        config=True,
        help="""Seconds an answer from the catalogue is reused.

        Short on purpose: a change in the user office (a person added to a
        proposal, a role expiring) reaches logged-in users after at most
        `ttl` + `Authenticator.auth_refresh_age` seconds. 0 disables the cache.
        """,
    )
    max_entries = Integer(
        20000,
        config=True,
        help="Upper bound on cached answers; the cache is emptied when it is reached.",
    )
    inner = Instance(Catalogue, help="The catalogue being cached.")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clock: Callable[[], float] = time.monotonic
        self.hits = 0
        self.misses = 0
        self._entries: dict[Hashable, tuple[float, Any]] = {}
        self._inflight: dict[Hashable, asyncio.Task[Any]] = {}

    def clear(self) -> None:
        """Forget every cached answer (e.g. after an administrator edits data)."""
        self._entries.clear()

    async def _cached(self, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> T:
        """Answer from the cache, from a query already in flight, or by querying."""
        now = self.clock()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            self.hits += 1
            return entry[1]
        task = self._inflight.get(key)
        if task is None:
            self.misses += 1
            task = asyncio.ensure_future(fetch())
            self._inflight[key] = task
            task.add_done_callback(lambda t, key=key: self._store(key, t))
        else:
            self.hits += 1
        # shield: one impatient caller being cancelled must not cancel the others' query
        return await asyncio.shield(task)

    def _store(self, key: Hashable, task: asyncio.Task[Any]) -> None:
        self._inflight.pop(key, None)
        if task.cancelled() or task.exception() is not None or self.ttl <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (self.clock() + self.ttl, task.result())

    async def person(self, person_id: str) -> Person | None:
        return await self._cached(("person", person_id), lambda: self.inner.person(person_id))

    async def experiments_of(self, person_id: str) -> tuple[Experiment, ...]:
        return await self._cached(
            ("experiments_of", person_id), lambda: self.inner.experiments_of(person_id)
        )

    async def instruments_of(self, person_id: str) -> tuple[Instrument, ...]:
        return await self._cached(
            ("instruments_of", person_id), lambda: self.inner.instruments_of(person_id)
        )

    async def experiments_on(self, instrument_ids: Iterable[str]) -> tuple[Experiment, ...]:
        ids = _ids(instrument_ids)
        return await self._cached(("experiments_on", ids), lambda: self.inner.experiments_on(ids))

    async def experiments_of_proposals(
        self, proposal_ids: Iterable[str]
    ) -> tuple[Experiment, ...]:
        ids = _ids(proposal_ids)
        return await self._cached(
            ("experiments_of_proposals", ids), lambda: self.inner.experiments_of_proposals(ids)
        )

    async def proposals(self, proposal_ids: Iterable[str]) -> tuple[Proposal, ...]:
        ids = _ids(proposal_ids)
        return await self._cached(("proposals", ids), lambda: self.inner.proposals(ids))

    async def open_proposals(self, today: date, limit: int) -> tuple[Proposal, ...]:
        return await self._cached(
            ("open_proposals", today, limit), lambda: self.inner.open_proposals(today, limit)
        )
