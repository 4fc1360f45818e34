"""The bookkeeping every backend's warm pool shares: definitions, ready and starting instances,
one background filler per pool, the API's put / status / drain.

What differs per backend (how one instance is made ready, adopted, destroyed; when two
definitions need different instances) stays in the backend's own pool (`sandbox/pool.py`,
`openstack/pool.py`), which fills `_ready` from its `_fill`.
"""
from __future__ import annotations

import asyncio
from typing import Any

from traitlets.config import LoggingConfigurable


class PoolError(ValueError):
    """A pool definition this hub refuses (the API answers 400 with the message)."""


class PoolBook(LoggingConfigurable):
    """Pools by name. Subclasses set `max_total` and `refill_quiet` (traits), `held` (what the size
    refusal calls the instances), and implement `_fill`, `_discard` and `_same_instances`."""

    held = "pooled instances"

    def __init__(self, backend: Any, **kwargs: Any) -> None:
        """`backend`: the hub's backend object, whose steps a pooled instance is made of."""
        super().__init__(**kwargs)
        self.backend = backend
        self._defs: dict[str, Any] = {}  # name → PoolDefinition
        self._ready: dict[str, list[Any]] = {}
        self._starting: dict[str, set[asyncio.Task]] = {}
        self._fillers: dict[str, asyncio.Task] = {}
        self._slots: asyncio.Semaphore | None = None
        self._last_taken: dict[str, float] = {}  # pool → loop time of its last adoption

    # -- what a backend's pool provides -------------------------------------------------------
    async def _fill(self, name: str) -> None:
        raise NotImplementedError

    async def _discard(self, pooled: Any) -> None:
        """Destroy one ready instance nobody adopted."""
        raise NotImplementedError

    def _same_instances(self, old: Any, new: Any) -> bool:
        """Whether instances made for definition `old` serve `new` too."""
        return old.plan == new.plan

    # -- the API's operations ------------------------------------------------------------------
    def status(self, name: str) -> dict | None:
        d = self._defs.get(name)
        if d is None:
            return None
        return {"name": name, "size": d.size, "ready": len(self._ready.get(name, [])),
                "starting": len(self._starting.get(name, ())), "plan": d.plan.id, "proposal": d.proposal}

    async def put(self, definition: Any) -> dict:
        """Create or change a pool: instances that no longer fit go, a smaller size ends the surplus."""
        others = sum(d.size for n, d in self._defs.items() if n != definition.name)
        if others + definition.size > self.max_total:
            raise PoolError(f"size {definition.size} is too large: this hub keeps at most {self.max_total} "
                            f"{self.held} and other pools hold {others}")
        old = self._defs.get(definition.name)
        self._defs[definition.name] = definition
        self._ready.setdefault(definition.name, [])
        self._starting.setdefault(definition.name, set())
        if old is not None and not self._same_instances(old, definition):
            await self._empty(definition.name)
        surplus = self._ready[definition.name][definition.size:]
        del self._ready[definition.name][definition.size:]
        await asyncio.gather(*(self._discard(p) for p in surplus))
        self._kick(definition.name)
        return self.status(definition.name)

    async def drain(self, name: str) -> bool:
        """End the pool and every instance it holds or starts (False: there was no such pool)."""
        if self._defs.pop(name, None) is None:
            return False
        filler = self._fillers.pop(name, None)
        if filler is not None:
            filler.cancel()
        await self._empty(name)
        self._ready.pop(name, None)
        self._starting.pop(name, None)
        return True

    async def _empty(self, name: str) -> None:
        starting = list(self._starting.get(name, ()))
        for task in starting:
            task.cancel()
        await asyncio.gather(*starting, return_exceptions=True)
        ready, self._ready[name] = self._ready.get(name, []), []
        await asyncio.gather(*(self._discard(p) for p in ready))

    def _taken(self, name: str) -> None:
        """An instance of pool `name` was adopted: note when, and refill (after `_refill_pause`)."""
        self._last_taken[name] = asyncio.get_running_loop().time()
        self._kick(name)

    def _refill_pause(self, name: str) -> float:
        """Seconds the pool still waits before it refills: until adoptions paused `refill_quiet` s.
        While a class arrives, the hub's and the host's work goes to the participants, not to
        instances for later arrivals."""
        taken = self._last_taken.get(name)
        return 0.0 if taken is None else taken + self.refill_quiet - asyncio.get_running_loop().time()

    def _kick(self, name: str) -> None:
        """Fill the pool in the background (one filler per pool)."""
        filler = self._fillers.get(name)
        if filler is None or filler.done():
            self._fillers[name] = asyncio.create_task(self._fill(name))
