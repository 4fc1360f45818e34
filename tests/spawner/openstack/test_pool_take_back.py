"""Which servers of a previous hub a pool put again takes back (`OpenStackPool._take_back`): only
booted servers of its pool and plan, nobody's, whose script asks with their key in time, up to the
pool's size; the rest are deleted, and only what is still missing is built.

No cloud here: the backend's listing, flavour, security groups and deletion are stand-ins; the
phone-home board is the real one (its `wait_resume` is what the hub's resume endpoint calls).
"""
from __future__ import annotations

import asyncio
import secrets
from types import SimpleNamespace

from visa_spawner.backends.base import Plan
from visa_spawner.backends.guest.phonehome import BOARD, resume_fingerprint
from visa_spawner.backends.openstack.pool import OpenStackPool
from visa_spawner.backends.sandbox.pool import PoolDefinition

PLAN = Plan("cloud", "Cloud server", "openstack", 2, 2048)


def server(name: str, key: str, *, pool: str = "room", plan: str = "cloud", status: str = "ACTIVE",
           owner: str = "") -> SimpleNamespace:
    meta = {"visa-hub": "hub-1", "visa-pool": pool, "visa-plan": plan, "visa-resume": resume_fingerprint(key),
            **({"visa-owner": owner, "visa-server": "course-room"} if owner else {})}
    return SimpleNamespace(id=f"id-{name}", name=name, status=status, metadata=meta)


class Backend:
    """What `_take_back` asks of the hub's `OpenStackBackend`, over a fixed list of servers."""

    tag = "visa-hub-1"
    hub_id = "hub-1"

    def __init__(self, servers: list) -> None:
        self.servers, self.deleted = servers, []
        conn = SimpleNamespace(compute=SimpleNamespace(servers=lambda **kw: iter([] if "marker" in kw else servers)))
        self.cloud_calls = SimpleNamespace(call=self._call)
        self.security = SimpleNamespace(ensure_for=self._groups)
        self._conn = conn

    async def _call(self, fn, *args, doing: str = ""):
        return fn(self._conn, *args)

    async def _flavor(self, plan):
        return "flavor-id", "m1.small"

    async def _groups(self, **kw):
        return ["visa-base"]

    async def _delete_named(self, name, wait=True, quiet=False):
        self.deleted.append(name)


class Pool(OpenStackPool):
    """Builds nothing: the names of the servers it would build are counted."""

    def __init__(self, backend, **kwargs) -> None:
        super().__init__(backend=backend, **kwargs)
        self.built = 0

    async def _build_and_keep(self, name: str, d: PoolDefinition, server: str) -> bool:
        self.built += 1
        self._ready[name].append(SimpleNamespace(name=server))
        self._starting[name].discard(asyncio.current_task())
        return True


async def _scenario() -> tuple[Pool, Backend]:
    keys = {n: secrets.token_urlsafe(32) for n in ("a", "b", "c", "mute", "plan", "build", "owned", "other")}
    servers = [server("a", keys["a"]), server("b", keys["b"]), server("c", keys["c"]), server("mute", keys["mute"]),
               server("plan", keys["plan"], plan="big"), server("build", keys["build"], status="BUILD"),
               server("owned", keys["owned"], owner="alice"), server("other", keys["other"], pool="another")]
    backend = Backend(servers)
    pool = Pool(backend, claim_timeout=1.0, refill_quiet=0)

    async def scripts_ask() -> None:  # each booted server's start script asks again after the restart
        while True:
            for n in ("a", "b", "c", "plan", "build", "owned", "other"):
                await BOARD.wait_resume(keys[n], 0)
            await asyncio.sleep(0.05)

    asking = asyncio.ensure_future(scripts_ask())
    try:
        await pool.put(PoolDefinition(name="room", plan=PLAN, size=2))
        await asyncio.wait_for(pool._fillers["room"], 10)
    finally:
        asking.cancel()
    return pool, backend


def test_a_pool_put_again_takes_back_what_fits_and_deletes_the_rest():
    pool, backend = asyncio.run(_scenario())
    ready = [p.name for p in pool._ready["room"]]
    assert len(ready) == 2 and set(ready) < {"a", "b", "c"}, ready
    assert pool.built == 0, "nothing is built when the previous hub's servers fill the pool"
    assert all(p.key_fingerprint and p.groups == ("visa-base",) for p in pool._ready["room"])
    surplus = {"a", "b", "c"} - set(ready)
    # the surplus, the one that never asked, another plan's and the one still building are deleted;
    # the one a participant was being given and another pool's are left to the reconciler
    assert sorted(backend.deleted) == sorted([*surplus, "mute", "plan", "build"])


async def _nothing_fits() -> Pool:
    pool = Pool(Backend([server("old", secrets.token_urlsafe(32), plan="big")]), claim_timeout=1.0, refill_quiet=0)
    await pool.put(PoolDefinition(name="room", plan=PLAN, size=2))
    await asyncio.wait_for(pool._fillers["room"], 10)
    return pool


def test_what_is_not_taken_back_is_built():
    pool = asyncio.run(_nothing_fits())
    assert pool.built == 2 and pool.backend.deleted == ["old"]


async def _drained_while_claiming() -> tuple[Pool, str]:
    key = secrets.token_urlsafe(32)
    pool = Pool(Backend([server("quiet", key)]), claim_timeout=30.0, refill_quiet=0)
    await pool.put(PoolDefinition(name="room", plan=PLAN, size=1))
    fingerprint = resume_fingerprint(key)
    async def claim_waits() -> None:  # the claim now waits for the server to ask
        while fingerprint not in BOARD._expected:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(claim_waits(), 10)
    await asyncio.wait_for(pool.drain("room"), 5)
    return pool, fingerprint


def test_a_pool_drained_while_it_claims_deletes_the_server_and_forgets_its_key():
    pool, fingerprint = asyncio.run(_drained_while_claiming())
    assert pool.backend.deleted == ["quiet"] and pool.built == 0
    assert fingerprint not in BOARD._expected, "the server's key is no longer expected on the board"
    assert not pool._building
