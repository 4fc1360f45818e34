"""The TTL cache in front of remote catalogues: hits, misses, expiry, shared queries."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import date

import pytest

from tests.support import ManualClock
from visa_authenticator.cache import CachedCatalogue
from visa_authenticator.catalogue import Catalogue, Experiment, Person, Proposal


class CountingCatalogue(Catalogue):
    """A fake remote catalogue that counts its queries and can be made slow or failing."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.calls: list[tuple] = []
        self.delay = 0.0
        self.fail = False
        self.name = "Alice"

    async def _answer(self, call: tuple, value: object) -> object:
        self.calls.append(call)
        await asyncio.sleep(self.delay)
        if self.fail:
            raise ConnectionError("database down")
        return value

    async def person(self, person_id: str) -> Person | None:
        return await self._answer(("person", person_id), Person(person_id, self.name))

    async def proposals(self, proposal_ids: Iterable[str]) -> tuple[Proposal, ...]:
        ids = tuple(proposal_ids)
        return await self._answer(("proposals", ids), tuple(Proposal(i, i) for i in ids))

    async def experiments_of_proposals(self, proposal_ids: Iterable[str]) -> tuple[Experiment, ...]:
        return await self._answer(("experiments_of_proposals", tuple(proposal_ids)), ())

    async def open_proposals(self, today: date, limit: int) -> tuple[Proposal, ...]:
        return await self._answer(("open", today, limit), ())



def cached(ttl: float = 60) -> tuple[CachedCatalogue, CountingCatalogue, ManualClock]:
    inner = CountingCatalogue()
    cache = CachedCatalogue(inner=inner, ttl=ttl)
    clock = ManualClock()
    cache.clock = clock
    return cache, inner, clock


async def test_hit_within_ttl_miss_after() -> None:
    cache, inner, clock = cached(ttl=60)
    assert (await cache.person("alice")).name == "Alice"
    inner.name = "Alice B"
    clock.t += 59
    assert (await cache.person("alice")).name == "Alice"  # hit: still the cached answer
    assert (cache.hits, cache.misses, len(inner.calls)) == (1, 1, 1)
    clock.t += 2
    assert (await cache.person("alice")).name == "Alice B"  # expired: asked again
    assert (cache.hits, cache.misses, len(inner.calls)) == (1, 2, 2)


async def test_keys_distinguish_methods_and_arguments() -> None:
    cache, inner, _ = cached()
    await cache.person("alice")
    await cache.person("bob")
    await cache.proposals(["A", "B"])
    await cache.proposals(["B", "A", "A"])  # same batch in another order: a hit
    await cache.experiments_of_proposals(["A", "B"])
    await cache.open_proposals(date(2026, 11, 24), 10)
    await cache.open_proposals(date(2026, 11, 25), 10)  # a new day is a new question
    assert cache.misses == 6 and cache.hits == 1
    assert ("proposals", ("A", "B")) in inner.calls


async def test_concurrent_identical_questions_share_one_query() -> None:
    cache, inner, _ = cached()
    inner.delay = 0.05
    answers = await asyncio.gather(*(cache.person("alice") for _ in range(20)))
    assert len(inner.calls) == 1
    assert all(a is answers[0] for a in answers)


async def test_failures_are_not_cached() -> None:
    cache, inner, _ = cached()
    inner.fail = True
    with pytest.raises(ConnectionError):
        await cache.person("alice")
    inner.fail = False
    assert (await cache.person("alice")).name == "Alice"
    assert len(inner.calls) == 2


async def test_cancelled_caller_does_not_cancel_the_others() -> None:
    cache, inner, _ = cached()
    inner.delay = 0.05
    first = asyncio.ensure_future(cache.person("alice"))
    second = asyncio.ensure_future(cache.person("alice"))
    await asyncio.sleep(0.01)
    first.cancel()
    assert (await second).name == "Alice"
    assert len(inner.calls) == 1


async def test_ttl_zero_disables_caching() -> None:
    cache, inner, _ = cached(ttl=0)
    await cache.person("alice")
    await cache.person("alice")
    assert len(inner.calls) == 2


async def test_clear_and_size_bound() -> None:
    cache, inner, _ = cached()
    cache.max_entries = 2
    for name in ("a", "b", "c"):
        await cache.person(name)
    assert len(cache._entries) == 1  # emptied when full, then the new answer stored
    cache.clear()
    await cache.person("c")
    assert len(inner.calls) == 4
