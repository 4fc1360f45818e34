"""Warm pools on OpenStack: servers built and booted ahead of a class, adopted by its participants.

A Nova server takes tens of seconds to be scheduled, built and booted; 100 participants starting
at 9:00 would wait for all of it at once. A pool named after the course keeps `size` servers of
the course's plan built and booted with a *neutral* configuration: no owner, no token, only a
random resume key of their own (the shelve/resume channel of `phonehome`). Their start script
asks the hub for a configuration with that key and waits (`"pooled"`: the hub holds the request).

Adoption (`OpenStackBackend.create` with `spec.warm_pool`): the server is renamed to the
instance's deterministic name and given its owner's metadata (so listings, the reconciler and a
later stop see an ordinary server of that instance), then the participant's config (their token,
user, URLs) is offered under the server's key; the script takes it and starts Jupyter as for any
instance. Each pooled server serves once: it leaves the pool before anything is offered, its key is
forgotten after, and the pool builds a new one. Anything failing deletes the server and the
instance starts the normal way.

Hub restarts: pool definitions live in the hub's memory, and the training service puts them again
(its sweep, when the hub no longer knows a started course's pool). The first fill of a pool then
takes back the servers a previous hub built for it (`_take_back`): their metadata name the pool,
the plan and the fingerprint of their key, and their start script keeps asking the hub with that
key, so the new hub expects it; a server that asks within `claim_timeout` is ready again, the
others are deleted. Until a pool claims them, the reconciler spares them (`Reconciler.pool_grace`).
"""
from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from traitlets import Float, Integer

from visa_spawner.backends.base import BackendError, InstanceSpec, ProgressCallback
from visa_spawner.backends.guest.phonehome import BOARD, resume_fingerprint
from visa_spawner.backends.openstack.cloud import get_server, list_servers
from visa_spawner.backends.openstack.model import (
    LIST_PAGE,
    META_PREFIX,
    PLAN_META,
    POOL_META,
    RESUME_META,
    owner_of,
    server_metadata,
    server_name,
)
from visa_spawner.backends.openstack.state import OpenStackState
from visa_spawner.backends.pools import PoolBook
from visa_spawner.backends.sandbox.pool import PoolDefinition


def pooled_config(*, resume_key: str, phone_home_url: str, wait: float) -> dict:
    """A pooled server's instance config (pure): nobody's; it only knows how to ask for one."""
    return {"version": 1, "pooled": True, "pool_wait": float(wait), "resume_key": resume_key,
            "phone_home_url": phone_home_url}


def _quiet(percent: int, message: str) -> None:
    """Progress of a server nobody waits for yet."""


@dataclass
class PooledServer:
    """One built, booted server waiting for a participant."""

    server_id: str
    name: str
    key_fingerprint: str
    groups: tuple[str, ...]
    booted: float = field(default_factory=time.time)


class OpenStackPool(PoolBook):
    """The hub's warm pools of Nova servers (one per course), owned by its `OpenStackBackend`."""

    max_total = Integer(
        100, config=True,
        help="Most servers built ahead, all pools together. Each holds a flavour's cores and memory "
        "of the project's quota while it waits; a pool that would pass it is refused.")
    fill_concurrency = Integer(
        20, config=True,
        help="Pooled servers requested from the cloud at the same time (the rest queue): a filling "
        "pool must leave room to the spawns of people and the cloud's API.")
    ready_timeout = Float(
        600, config=True,
        help="Seconds a pooled server may take from its request until it booted and asked for its "
        "configuration; then it is deleted and another is built.")
    retry_delay = Float(15, config=True, help="Seconds before a pool retries after a server failed to build.")
    refill_quiet = Float(
        10, config=True,
        help="Seconds without an adoption before a pool builds the servers it lost. While a class "
        "starts, building replacements beside the adoptions slows the class (docs/training.md) and "
        "takes the project's quota from the participants the pool could not serve. 0: at once.")
    claim_timeout = Float(
        40, config=True,
        help="Seconds a server a previous hub built for a pool has, once the pool is put again, to "
        "ask this hub for its configuration (its script asks again within seconds of a restart); "
        "one that does not is deleted and replaced.")
    pool_wait = Float(
        25, config=True,
        help="Seconds the hub holds a waiting pooled server's request for its configuration (then "
        "it asks again). Shorter loads the hub with requests; adoption is immediate either way.")

    held = "servers built ahead"

    def __init__(self, backend: Any, **kwargs: Any) -> None:
        """`backend`: the hub's `OpenStackBackend` (not imported: it makes this pool), whose steps
        a pooled server is built and adopted with."""
        super().__init__(backend, **kwargs)
        self._building: dict[asyncio.Task, str] = {}  # server names of the builds in flight
        self._looked_back: set[str] = set()  # pools whose previous hub's servers were taken back

    # -- the API's operations ------------------------------------------------------------------
    def check_materials(self, materials: str) -> str:
        """A pooled server holds no materials (it names nobody): the hub pushes them into the home
        once a participant adopted it (`materials.py`), so the pool ignores the folder."""
        return ""

    def server_names(self) -> set[str]:
        """Names of the servers pools hold or build now (the reconciler spares them)."""
        return {p.name for ready in self._ready.values() for p in ready} | set(self._building.values())

    async def _discard(self, pooled: PooledServer) -> None:
        await self._destroy(pooled)

    # -- adoption --------------------------------------------------------------------------------
    async def adopt(self, spec: InstanceSpec, progress: ProgressCallback) -> dict | None:
        """The state of a pooled server now running Jupyter for `spec`'s owner, or None (no pool,
        none ready, another plan or security groups, a restore, or this instance already has a
        server: the caller starts one the normal way)."""
        backend, log_name = self.backend, f"{spec.owner}:{spec.server_name}"
        d = self._defs.get(spec.warm_pool)
        if d is None or not self._ready.get(spec.warm_pool) or d.plan.id != spec.plan.id or spec.restore_from:
            self.log.info("%s: warm pool %r has no fitting server ready; building one", log_name, spec.warm_pool)
            return None
        _, flavor_name = await backend._flavor(spec.plan)
        groups = tuple(sorted(await backend.security.ensure_for(
            roles=spec.roles, instruments=spec.instruments, flavor=flavor_name,
            open_instruments=spec.instrument_control)))
        name = backend.name_for(spec.owner, spec.server_name)
        if await backend.exists(name):  # a shelved instance resumes its own server
            return None
        ready = self._ready.get(spec.warm_pool, [])
        pooled = next((p for p in ready if p.groups == groups), None)  # taken with no await: serves once
        if pooled is None:
            self.log.info("%s: no server of warm pool %r left with this instance's security groups", log_name,
                          spec.warm_pool)
            return None
        ready.remove(pooled)
        self._taken(spec.warm_pool)
        try:
            return await self._hand_over(pooled, spec, name, progress)
        except BaseException as e:  # the server may hold the participant's config: it goes
            self.log.warning("%s: adoption of pooled server %s failed (%s); building one", log_name,
                             pooled.server_id, getattr(e, "log_detail", "") or getattr(e, "message", "") or repr(e))
            await asyncio.shield(asyncio.gather(backend._delete_named(name, wait=True, quiet=True),
                                                self._destroy(pooled)))
            if not isinstance(e, Exception):
                raise
            return None  # the normal start follows

    async def _hand_over(self, pooled: PooledServer, spec: InstanceSpec, name: str,
                         progress: ProgressCallback) -> dict:
        backend, calls = self.backend, self.backend.cloud_calls
        token = spec.env.get("JUPYTERHUB_API_TOKEN", "")
        if not token:
            raise BackendError("The hub gave this instance no API token.", reason="config")
        inbox = BOARD.register(token)
        backend.inflight.update((name, pooled.name))  # the reconciler spares it under either name
        try:
            progress(20, "Taking a server built ahead for the course")
            metadata = server_metadata(hub_id=backend.hub_id, owner=spec.owner, server=spec.server_name,
                                       proposal=spec.proposal, plan=spec.plan.id)
            await calls.call(lambda c: c.compute.update_server(pooled.server_id, name=name), doing="naming the server")
            await calls.call(lambda c: c.compute.set_server_metadata(pooled.server_id, **metadata),
                             doing="setting the server's owner")
            await calls.call(lambda c: c.compute.delete_server_metadata(pooled.server_id, [POOL_META]),
                             doing="taking the server out of its pool")
            server = await calls.call(get_server, pooled.server_id, doing="reading the adopted server")
            if server is None or server.status != "ACTIVE":
                raise BackendError("pooled server gone", log_detail=f"{pooled.server_id}: {server and server.status}")
            floating = await backend._floating_ip(server) if backend.floating_ip_network else ""
            BOARD.offer_resume(pooled.key_fingerprint, backend.instance_config(spec))
            progress(40, "The course's server is up; starting your session in it")
            report = await backend._wait_booted(server, inbox, progress)
            address = await backend._address(server, report, floating)
            backend.running.add(name)
            self.log.info("%s/%s: adopted pooled server %s (%s) at %s:%s", spec.owner, spec.server_name, name,
                          server.id, address, report.port or spec.port)
            state = OpenStackState(backend=spec.plan.backend, owner=spec.owner, server_name=spec.server_name,
                                   server_id=server.id, name=name, address=address, port=report.port or spec.port)
            return {**state.to_dict(), "warm_pool": spec.warm_pool}
        finally:
            BOARD.unregister(inbox)
            BOARD.withdraw_resume(pooled.key_fingerprint)
            BOARD.forget(pooled.key_fingerprint)
            backend.inflight.difference_update((name, pooled.name))

    # -- filling -------------------------------------------------------------------------------
    async def _fill(self, name: str) -> None:
        if name not in self._looked_back and (d := self._defs.get(name)) is not None:
            self._looked_back.add(name)
            await self._take_back(name, d)
        while (d := self._defs.get(name)) is not None:
            if (pause := self._refill_pause(name)) > 0:  # adoptions go on: replacements wait
                await asyncio.sleep(pause)
                continue
            missing = d.size - len(self._ready[name]) - len(self._starting[name])
            if missing <= 0:
                return
            tasks = []
            for _ in range(missing):
                server = server_name(self.backend.hub_id, "", f"pool\0{name}\0{secrets.token_hex(8)}")
                tasks.append(asyncio.create_task(self._build_and_keep(name, d, server)))
            self._starting[name].update(tasks)
            results = await asyncio.gather(*tasks, return_exceptions=True)  # cancelled: the pool changed
            if any(r is False for r in results):
                await asyncio.sleep(self.retry_delay)

    async def _take_back(self, name: str, d: PoolDefinition) -> None:
        """Make ready again the servers a previous hub built for pool `name` (same plan, booted, and
        their script still asking); delete the rest of them. Errors only cost the servers: the
        pool then builds new ones."""
        backend = self.backend
        try:
            servers = await backend.cloud_calls.call(lambda c: list_servers(c, LIST_PAGE, tags=backend.tag),
                                                     doing="listing the pool's servers")
        except Exception as e:  # noqa: BLE001 - the pool builds new servers instead
            self.log.warning("Warm pool %r: servers of a previous hub not listed: %s", name,
                             getattr(e, "log_detail", "") or e)
            return
        known = self.server_names()
        mine = [s for s in servers if (s.metadata or {}).get(POOL_META) == name and s.name not in known]
        if not mine:
            return
        _, flavor_name = await backend._flavor(d.plan)
        groups = tuple(sorted(await backend.security.ensure_for(roles=(), instruments=(), flavor=flavor_name,
                                                                open_instruments=())))
        kept = await asyncio.gather(*(self._claim(name, d, s, groups) for s in mine))
        self.log.info("Warm pool %r: %d of %d server(s) of a previous hub taken back", name, sum(kept), len(mine))

    async def _claim(self, name: str, d: PoolDefinition, server: Any, groups: tuple[str, ...]) -> bool:
        """One server of a previous hub: ready again if it fits and asks within `claim_timeout`."""
        meta = server.metadata or {}
        if owner_of(meta)[0]:  # a previous hub died while handing it over: it bears that instance's
            return False  # name, the reconciler judges it by the hub's records
        pooled = PooledServer(server_id=server.id, name=server.name, key_fingerprint=meta.get(RESUME_META, ""),
                              groups=groups)
        task = asyncio.current_task()
        self._building[task] = server.name  # the reconciler spares it meanwhile
        try:
            if meta.get(PLAN_META) == d.plan.id and server.status == "ACTIVE" and pooled.key_fingerprint:
                try:
                    await asyncio.wait_for(BOARD.expect(pooled.key_fingerprint).wait(), self.claim_timeout)
                except TimeoutError:
                    pass
                else:
                    if self._wants(name, d):
                        self._ready[name].append(pooled)
                        return True
            await self._destroy(pooled)
            return False
        except asyncio.CancelledError:  # the pool was drained meanwhile: the server goes with it
            await asyncio.shield(self._destroy(pooled))
            raise
        finally:
            self._building.pop(task, None)

    def _wants(self, name: str, d: PoolDefinition) -> bool:
        """Whether pool `name` still wants a server of `d`'s plan (it may have changed or shrunk
        while the server was built or asked)."""
        now = self._defs.get(name)
        return now is not None and now.plan == d.plan and len(self._ready[name]) < now.size

    async def _build_and_keep(self, name: str, d: PoolDefinition, server: str) -> bool:
        """Build one server for pool `name` and make it ready at once (if the pool still wants it);
        False if it failed."""
        task = asyncio.current_task()
        self._building[task] = server
        try:
            pooled = await self._build(d, server)
            self._starting.get(name, set()).discard(task)
            if self._wants(name, d):
                self._ready[name].append(pooled)
            else:
                await self._destroy(pooled)
            return True
        except Exception as e:  # noqa: BLE001 - logged; the filler retries after retry_delay
            self.log.warning("Warm pool %r: a server was not built: %s", name, getattr(e, "log_detail", "") or e)
            return False
        finally:  # only now: a built server is always in `_building` or `_ready` (the reconciler)
            self._starting.get(name, set()).discard(task)
            self._building.pop(task, None)

    async def _build(self, d: PoolDefinition, name: str) -> PooledServer:
        """One server of pool `d`, built and booted (it asked for its config once)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.fill_concurrency)
        async with self._slots:
            key = secrets.token_urlsafe(32)
            pooled = PooledServer(server_id="", name=name, key_fingerprint=resume_fingerprint(key), groups=())
            asked = BOARD.expect(pooled.key_fingerprint)
            try:
                return await asyncio.wait_for(self._boot(d, pooled, key, asked), self.ready_timeout)
            except BaseException:
                await asyncio.shield(self._destroy(pooled))
                raise

    async def _boot(self, d: PoolDefinition, pooled: PooledServer, key: str, asked: asyncio.Event) -> PooledServer:
        backend = self.backend
        url = backend.hub_connect_url or d.hub_env.get("JUPYTERHUB_API_URL", "")
        config = pooled_config(resume_key=key, phone_home_url=url.rstrip("/") + "/visa/phone-home",
                               wait=self.pool_wait)
        neutral = InstanceSpec(owner="", server_name=pooled.name, instance_id=pooled.name, display_name=d.name,
                               proposal="", plan=d.plan, command=(), env={}, port=0)
        flavor_id, flavor_name = await backend._flavor(d.plan)
        pooled.groups = tuple(sorted(await backend.security.ensure_for(roles=(), instruments=(), flavor=flavor_name,
                                                                       open_instruments=())))
        fields = dict(
            name=pooled.name, flavor_id=flavor_id, image_id=await backend.boot_image(neutral),
            user_data=backend.render_user_data(config), tags=[backend.tag], networks=await backend._networks(),
            metadata={f"{META_PREFIX}hub": backend.hub_id, POOL_META: d.name, PLAN_META: d.plan.id,
                      RESUME_META: pooled.key_fingerprint},
            **({"security_groups": [{"name": g} for g in pooled.groups]} if pooled.groups else {}),
        )
        server = await backend.cloud_calls.once(lambda c: c.compute.create_server(**fields))
        pooled.server_id = server.id
        await backend._wait_active(server, _quiet)
        await asked.wait()  # the server booted: its script asks for a config
        pooled.booted = time.time()
        return pooled

    async def _destroy(self, pooled: PooledServer) -> None:
        """Delete a pooled server (by its pool name: a request that timed out may still create it)."""
        BOARD.forget(pooled.key_fingerprint)
        await self.backend._delete_named(pooled.name, wait=True, quiet=True)
