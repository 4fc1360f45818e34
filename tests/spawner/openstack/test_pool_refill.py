"""The OpenStack warm pool waits for adoptions to pause before building replacements (`refill_quiet`):
during a class start the hub adopts, and building the lost servers at the same time doubled its work.

No cloud here: the pool's build step is replaced by one that records when it was asked.
"""
from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from visa_spawner.backends.base import Plan
from visa_spawner.backends.openstack.pool import OpenStackPool
from visa_spawner.backends.sandbox.pool import PoolDefinition

PLAN = Plan("cloud", "Cloud server", "openstack", 2, 2048)


class RecordingPool(OpenStackPool):
    """Builds nothing: each requested server is ready at once, and the time of the request kept."""

    def __init__(self, **kwargs) -> None:
        super().__init__(backend=SimpleNamespace(hub_id="hub-1"), **kwargs)
        self.requested: list[float] = []

    async def _build_and_keep(self, name: str, d: PoolDefinition, server: str) -> bool:
        self.requested.append(time.monotonic())
        self._ready[name].append(object())
        self._starting[name].discard(asyncio.current_task())
        return True

    def take(self, name: str) -> None:
        """What `adopt` does to the pool's books when a participant takes a server."""
        self._ready[name].pop()
        self._taken(name)


async def _settled(pool: RecordingPool, name: str, size: int) -> None:
    while len(pool._ready[name]) < size or pool._starting[name]:
        await asyncio.sleep(0.01)


async def _take_two_and_refill(quiet: float) -> tuple[float, list[float]]:
    pool = RecordingPool(refill_quiet=quiet)
    await pool.put(PoolDefinition(name="room", plan=PLAN, size=3))
    await asyncio.wait_for(_settled(pool, "room", 3), 5)
    assert len(pool.requested) == 3
    pool.take("room")
    await asyncio.sleep(quiet / 2)
    pool.take("room")  # a second adoption within the quiet period starts it again
    last_take = time.monotonic()
    await asyncio.wait_for(_settled(pool, "room", 3), 5 + quiet)
    return last_take, pool.requested[3:]


def test_replacements_wait_for_the_adoptions_to_pause():
    last_take, refill = asyncio.run(_take_two_and_refill(quiet=0.6))
    assert len(refill) == 2
    assert min(refill) >= last_take + 0.6 - 0.01, f"built {last_take + 0.6 - min(refill):.2f} s too early"


def test_no_quiet_period_refills_at_once():
    pool_refill = asyncio.run(_take_two_and_refill(quiet=0.0))[1]
    assert len(pool_refill) == 2
