"""The console's view of the hub's instances: one read of the hub database serves the pages asked
within LISTING_MAX_AGE, concurrent pages share it, and an admin action makes the next page read
afresh."""
from __future__ import annotations

import asyncio

from tests.ops.conftest import T0
from visa_ops import ops as ops_module


async def test_pages_share_one_read_and_an_action_forgets_it(ops, hubdb, monkeypatch):
    hubdb.server("alice", "a1", started=T0, last_activity=T0)
    reads = []
    real = ops_module.load_instances

    async def counting(*args, **kw):
        reads.append(args)
        return await real(*args, **kw)

    monkeypatch.setattr(ops_module, "load_instances", counting)
    first, second = await asyncio.gather(ops.listing(), ops.listing())
    assert [i.server for i in first] == [i.server for i in second] == ["a1"]
    assert len(reads) == 1
    hubdb.server("alice", "a2", started=T0, last_activity=T0)
    assert [i.server for i in await ops.listing()] == ["a1"] and len(reads) == 1  # still fresh enough
    await ops.admin_action("root", "alice", "a1", "extend", {"days": 2})
    assert sorted(i.server for i in await ops.listing()) == ["a1", "a2"]


async def test_an_old_listing_is_read_again(ops, hubdb, monkeypatch):
    hubdb.server("alice", "a1", started=T0, last_activity=T0)
    await ops.listing()
    hubdb.server("alice", "a2", started=T0, last_activity=T0)
    monkeypatch.setattr(ops_module, "LISTING_MAX_AGE", 0.0)
    assert sorted(i.server for i in await ops.listing()) == ["a1", "a2"]
