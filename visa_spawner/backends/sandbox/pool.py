"""Warm pools: sandboxes started before anyone owns them, adopted by a course's participants.

A course of 30 people logging in at 9:00 would otherwise start 30 Jupyter servers at once, each
spending seconds importing Python modules on a shared host. A pool named after the course keeps
`size` sandboxes ready: the normal sandbox (account, home with the course's materials, the plan's
cgroup, bubblewrap with the proposal's data, bridge and hub routes) under a fresh anonymous
account, running `visa_instance.zygote`, which has imported Jupyter and waits on a socket pair only
the hub holds. `SandboxBackend.create` with `spec.warm_pool` takes one: it sends the owner's
environment (JupyterHub token, user, URLs) and the server's command line, the zygote becomes
Jupyter, and the pool refills in the background. Each pooled sandbox serves once; its account,
home and processes are the adopter's only, as for any instance.

What stays with the instance: its saved state names the pooled account and port; the adoption is
also written to ``<state_dir>/adopted/`` so that after a stop (JupyterHub clears the saved state)
the next start, the archive and the deletion find the same account and home.

Hub restarts: pooled sandboxes are ended, not re-listed. The channel to each zygote is a socket
pair whose hub end dies with the hub, so a zygote sees end-of-file and exits (its bridge with it);
what remains (account, home, cgroup directory) is marked by ``<state_dir>/pool/<account>`` and
removed the first time the pool is used again. Re-listing would need a channel that outlives the
hub, i.e. a path in the file system that must be guarded, for sandboxes that cost seconds to
replace. Pool definitions are not kept either: whoever made a pool (the training service) puts it
again.
"""
from __future__ import annotations

import asyncio
import atexit
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from jupyterhub.utils import random_port
from traitlets import Float, Integer, List, Unicode, default

from visa_spawner.backends.base import Backend, BackendError, InstanceSpec, Plan, ProgressCallback
from visa_spawner.backends.pools import PoolBook, PoolError
from visa_spawner.backends.sandbox.cgroups import Cgroup, CgroupError
from visa_spawner.backends.sandbox.command import account_name, sandbox_env, sandbox_hostname
from visa_spawner.backends.sandbox.network import HubRoute
from visa_spawner.backends.sandbox.state import SandboxState
from visa_spawner.course import server_name as course_server_name

POOL_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
REPO_HUB_CONFIG = str(Path(__file__).resolve().parents[3] / "hub_config")


# -- adoptions: which pooled account an instance took (kept across stops) ----------------------
def _adoption_file(state_dir: str, owner: str, server: str) -> Path:
    return Path(state_dir) / "adopted" / account_name(owner, server, "")


def adopted_account(state_dir: str, owner: str, server: str) -> str:
    """The pooled account the instance (owner, server) adopted, or ""."""
    try:
        return _adoption_file(state_dir, owner, server).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return ""


def forget_adoption(state_dir: str, owner: str, server: str) -> None:
    if owner:
        _adoption_file(state_dir, owner, server).unlink(missing_ok=True)


def _record_adoption(state_dir: str, owner: str, server: str, account: str) -> None:
    path = _adoption_file(state_dir, owner, server)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_text(account)
    path.chmod(0o600)


def zygote_command(instance_env: str, channel_fd: int) -> list[str]:
    """The first process of a pooled sandbox. ``-P``: its working directory is the home, whose
    files (the course's materials, later the owner's own) must not shadow the modules the zygote
    and then the owner's server import (``-m`` would put that directory first in ``sys.path``)."""
    return [f"{instance_env}/bin/python", "-P", "-m", "visa_instance.zygote", f"--channel-fd={channel_fd}"]


def with_port(url: str, port: int) -> str:
    """`url` with its port replaced (JUPYTERHUB_SERVICE_URL: where Jupyter binds, inside)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port}")) if parts.hostname else url


@dataclass(frozen=True)
class PoolDefinition:
    """What a pool keeps ready: `size` sandboxes of `plan` with `proposal`'s data and `materials`."""

    name: str
    plan: Plan
    size: int
    proposal: str = ""
    data_path: str = ""  # host directory of the proposal's data ("" if none)
    materials: str = ""  # resolved host folder ("" if none)
    hub_env: Mapping[str, str] = field(default_factory=dict)  # the hub URLs an instance reaches

    @property
    def hostname(self) -> str:
        """Its sandboxes' hostname: that of the servers adopting them, a course's `course-<pool>`, so
        an adopted sandbox is named as one started the normal way (bubblewrap fixes it at start)."""
        return sandbox_hostname(course_server_name(self.name))

    def same_sandboxes(self, other: PoolDefinition) -> bool:
        """Would a sandbox of `other` serve this pool too (everything but the size)?"""
        return replace(other, size=self.size) == self

    def mismatch(self, spec: InstanceSpec) -> str:
        """Why a sandbox of this pool cannot serve `spec` ("" if it can)."""
        materials = os.path.realpath(spec.materials) if spec.materials else ""
        for what, pooled, wanted in (("plan", self.plan.id, spec.plan.id),
                                     ("proposal", self.proposal, spec.proposal),
                                     ("data", self.data_path, spec.data_path),
                                     ("materials", self.materials, materials),
                                     ("hostname", self.hostname, sandbox_hostname(spec.server_name))):
            if pooled != wanted:
                return f"its {what} is {pooled!r}, the instance wants {wanted!r}"
        return ""


@dataclass
class Pooled:
    """One started sandbox waiting for its owner."""

    account: str
    uid: int
    port: int
    home_inside: str
    hub_routes: tuple[HubRoute, ...]
    extra_env: dict[str, str]  # the instrument gateway's variables, when it has a route to it
    instrument_address: str
    proc: asyncio.subprocess.Process
    bridge: asyncio.subprocess.Process
    channel: asyncio.StreamWriter
    started: float


class WarmPool(PoolBook):
    """The host's warm pools (one per course), owned by its `SandboxBackend`."""

    max_total = Integer(
        40, config=True,
        help="Most pooled sandboxes on this host, all pools together (each holds a started Python "
        "process of about 100 MB and counts against its plan's memory only when used). A pool "
        "that would pass it is refused.")
    fill_concurrency = Integer(
        2, config=True,
        help="Pooled sandboxes started at the same time: a start is mostly CPU (imports), so more "
        "than the host's cores only slows the instances people are using.")
    pooled_cpu_weight = Integer(
        5, config=True,
        help="CPU weight of a sandbox while it waits in a pool (100: as a sandbox in use; cgroup "
        "cpu.weight, or cpu.shares scaled). Low, so filling a pool during a class never slows "
        "the instances participants use; set back to 100 when one is adopted.")
    refill_quiet = Float(
        15, config=True,
        help="Seconds without an adoption before a pool refills: while a class arrives, the CPU goes "
        "to the participants' Jupyter servers rather than to sandboxes for later arrivals.")
    ready_timeout = Float(90, config=True, help="Seconds a pooled sandbox may take to import Jupyter.")
    retry_delay = Float(15, config=True, help="Seconds before a pool retries after a start failed.")
    materials_roots = List(
        Unicode(), config=True,
        help="Host folders a pool's materials must lie in (resolved, links followed): a token "
        "allowed to make pools must not be able to copy any host file into a sandbox. Default: "
        "this installation's hub_config/ folder.")

    @default("materials_roots")
    def _default_materials_roots(self) -> list[str]:  # computed: the reference must not show a checkout's path
        return [REPO_HUB_CONFIG]

    held = "pooled sandboxes"

    def __init__(self, backend: Backend, **kwargs) -> None:
        """`backend`: the hub's `SandboxBackend`, whose steps a pooled sandbox is made of."""
        super().__init__(backend, **kwargs)
        self._cleaned: asyncio.Task | None = None

    @property
    def pool_dir(self) -> Path:
        return Path(self.backend.state_dir) / "pool"

    # -- the API's operations ------------------------------------------------------------------
    def check_materials(self, materials: str) -> str:
        """The resolved materials folder, or PoolError."""
        if not materials:
            return ""
        resolved = os.path.realpath(materials)
        roots = [os.path.realpath(r) for r in self.materials_roots]
        if not any(resolved == r or resolved.startswith(r.rstrip("/") + "/") for r in roots):
            raise PoolError("materials must be a folder of the hub's course materials")
        if not os.path.isdir(resolved):
            raise PoolError("materials is not a folder on the hub's host")
        return resolved

    async def put(self, definition: PoolDefinition) -> dict:
        """Create or change a pool, once what an earlier hub's pools left is gone."""
        await self.startup()
        return await super().put(definition)

    def _same_instances(self, old: PoolDefinition, new: PoolDefinition) -> bool:
        return new.same_sandboxes(old)

    async def _discard(self, pooled: Pooled) -> None:
        await self._destroy(pooled.account, pooled)

    # -- adoption --------------------------------------------------------------------------------
    async def adopt(self, spec: InstanceSpec, progress: ProgressCallback) -> dict | None:
        """The state of a pooled sandbox now running Jupyter for `spec`'s owner, or None (no pool,
        none ready, not a new instance, or a mismatch: the caller starts one the normal way)."""
        name, log_name = spec.warm_pool, f"{spec.owner}:{spec.server_name}"
        d = self._defs.get(name)
        if d is None or not self._ready.get(name):
            self.log.info("%s: warm pool %r has no sandbox ready; starting one", log_name, name)
            return None
        if why := d.mismatch(spec):
            self.log.warning("%s: warm pool %r does not fit (%s); starting one", log_name, name, why)
            return None
        derived = account_name(spec.owner, spec.server_name, self.backend.account_prefix)
        if adopted_account(self.backend.state_dir, spec.owner, spec.server_name) or \
                self.backend._home(derived).exists():
            return None  # a restart: the instance keeps its own home
        pooled = self._ready[name].pop(0)
        self._taken(name)
        try:
            return await self._hand_over(pooled, spec, progress)
        except BackendError as e:
            self.log.warning("%s: adoption from warm pool %r failed (%s); starting one", log_name, name,
                             e.log_detail or e.message)
        forget_adoption(self.backend.state_dir, spec.owner, spec.server_name)
        await self._destroy(pooled.account, pooled)
        return None

    async def _hand_over(self, pooled: Pooled, spec: InstanceSpec, progress: ProgressCallback) -> dict:
        backend = self.backend
        hub_env, routes = backend._hub_routes(replace(spec, port=pooled.port))
        if routes != pooled.hub_routes:
            raise BackendError("routes differ", log_detail=f"the hub's URLs changed: {routes} vs {pooled.hub_routes}")
        env = sandbox_env(hub_env, home=pooled.home_inside, user=spec.owner, instance_env=backend.instance_env)
        env.update(pooled.extra_env)
        if "JUPYTERHUB_SERVICE_URL" in env:
            env["JUPYTERHUB_SERVICE_URL"] = with_port(env["JUPYTERHUB_SERVICE_URL"], pooled.port)
        progress(40, "Taking a sandbox started ahead for the course")
        self._cpu_weight(Cgroup(pooled.account, parent=backend.cgroup_parent), 100)
        try:  # its bridge looks for Jupyter every 10 ms from now (bridge.py), not every 0.25 s
            pooled.bridge.send_signal(signal.SIGUSR1)
        except ProcessLookupError:
            raise BackendError("bridge", log_detail="the pooled sandbox's bridge ended") from None
        request = {"argv": backend._command(spec, pooled.home_inside), "env": env, "cwd": pooled.home_inside}
        try:
            pooled.channel.write(json.dumps(request).encode() + b"\n")
            await pooled.channel.drain()
        except (ConnectionError, OSError) as e:
            raise BackendError("channel", log_detail=f"the pooled sandbox's channel closed: {e}") from None
        finally:
            pooled.channel.close()
        _record_adoption(backend.state_dir, spec.owner, spec.server_name, pooled.account)
        progress(60, "Waiting for Jupyter in the sandbox")
        await backend._wait_listening(pooled.account, pooled.proc, pooled.bridge)
        (self.pool_dir / pooled.account).unlink(missing_ok=True)  # an instance now, not the pool's
        state = SandboxState(backend=spec.plan.backend, owner=spec.owner, server_name=spec.server_name,
                             account=pooled.account, uid=pooled.uid, port=pooled.port,
                             instrument_address=pooled.instrument_address, pid=pooled.proc.pid,
                             started=pooled.started)
        return {**state.to_dict(), "warm_pool": spec.warm_pool}

    def _cpu_weight(self, cgroup: Cgroup, weight: int) -> None:
        try:
            cgroup.set_cpu_weight(weight)
        except CgroupError as e:  # a pooled sandbox at full weight is slower to live beside, not wrong
            self.log.warning("Warm pool: %s", e)

    # -- filling -------------------------------------------------------------------------------
    async def _fill(self, name: str) -> None:
        delay = 0.0
        while (d := self._defs.get(name)) is not None:
            missing = d.size - len(self._ready[name]) - len(self._starting[name])
            if missing <= 0:
                return
            quiet = self._refill_pause(name)
            if max(delay, quiet) > 0:
                await asyncio.sleep(max(delay, quiet))
                delay = 0.0
                continue
            tasks = [asyncio.create_task(self._start_and_keep(name, d)) for _ in range(missing)]
            self._starting[name].update(tasks)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            self._starting.get(name, set()).difference_update(tasks)
            failed = [r for r in results if isinstance(r, BaseException)]
            for error in failed:
                if not isinstance(error, asyncio.CancelledError):
                    self.log.warning("Warm pool %r: a sandbox did not start: %s", name,
                                     getattr(error, "log_detail", "") or error)
            delay = self.retry_delay if failed else 0.0

    async def _start_and_keep(self, name: str, d: PoolDefinition) -> None:
        """Start one sandbox for pool `name` and keep it, or end it if the pool changed meanwhile.
        Done inside the task, not by the filler: a drain cancels the filler, and a sandbox started
        just then would be nobody's (the drain waits for this task, so it ends it first)."""
        pooled = await self._start_one(d)  # on failure or cancellation it ends its own sandbox
        now = self._defs.get(name)
        if now is not None and now.same_sandboxes(d) and len(self._ready[name]) < now.size:
            self._ready[name].append(pooled)
            return
        ending = asyncio.ensure_future(self._destroy(pooled.account, pooled))
        try:
            await asyncio.shield(ending)
        except asyncio.CancelledError:
            await ending  # a drain waits for this task: it must find the sandbox gone
            raise

    async def _start_one(self, d: PoolDefinition) -> Pooled:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.fill_concurrency)
        async with self._slots:
            account = f"{self.backend.account_prefix}pool-{secrets.token_hex(6)}"
            self.pool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            (self.pool_dir / account).write_text(d.name)  # first: a crash leaves a mark to clean up
            try:
                return await asyncio.wait_for(self._boot(d, account), self.ready_timeout)
            except BaseException:
                await asyncio.shield(self._destroy(account))
                raise

    async def _boot(self, d: PoolDefinition, account: str) -> Pooled:
        backend, loop = self.backend, asyncio.get_running_loop()
        port = random_port()
        spec = InstanceSpec(owner=account, server_name=d.name, instance_id=account, display_name=d.name,
                            proposal=d.proposal, plan=d.plan, command=(), env=dict(d.hub_env), port=port,
                            data_path=d.data_path, materials=d.materials)
        _, hub_routes = backend._hub_routes(spec)
        extra_env: dict[str, str] = {}
        address, routes = backend._instrument_route(account, extra_env, hub_routes, port)
        uid, gid = await backend._ensure_account(account)
        home = backend._home(account)
        await loop.run_in_executor(None, backend._prepare_dirs, home, uid, gid)
        if d.materials:
            await backend._copy_materials(d.materials, home, uid, gid)
        cgroup = backend._limited_cgroup(account, d.plan)
        self._cpu_weight(cgroup, self.pooled_cpu_weight)
        layout = replace(backend._layout(spec, account, uid, gid), hostname=d.hostname)
        env = sandbox_env({}, home=layout.home_inside, user=account, instance_env=backend.instance_env)
        hub_end, sandbox_end = socket.socketpair()
        try:
            command = zygote_command(backend.instance_env, sandbox_end.fileno())
            proc, bridge = await backend._launch(cgroup, layout, command, env, routes, port,
                                                 extra_fds=(sandbox_end.fileno(),))
        except BaseException:
            hub_end.close()
            raise
        finally:
            sandbox_end.close()
        reader, writer = await asyncio.open_unix_connection(sock=hub_end)
        line = await reader.readline()
        if not line or not json.loads(line).get("ready"):
            writer.close()
            raise BackendError("zygote", log_detail=f"{account}: the zygote ended before it was ready")
        return Pooled(account=account, uid=uid, port=port, home_inside=layout.home_inside, hub_routes=hub_routes,
                      extra_env=extra_env, instrument_address=address, proc=proc, bridge=bridge, channel=writer,
                      started=time.time())

    # -- cleaning --------------------------------------------------------------------------------
    def startup_soon(self) -> None:
        """`startup` in the background, when there is an event loop (the hub's)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._cleaned = asyncio.ensure_future(self._remove_leftovers())
        atexit.register(self.end_all_now)

    def end_all_now(self) -> None:
        """At the hub's exit: end every pooled sandbox and remove its account, home and cgroup
        (blocking; the event loop is gone). A hub that is killed instead leaves them to the next
        hub on the same state dir; a test hub's state dir is thrown away, its accounts would stay."""
        marks = sorted(self.pool_dir.iterdir()) if self.pool_dir.is_dir() else []
        for mark in marks:
            account = mark.name
            cgroup = Cgroup(account, parent=self.backend.cgroup_parent)
            deadline = time.monotonic() + 5
            while cgroup.pids() and time.monotonic() < deadline:
                cgroup.signal_all(signal.SIGKILL)
                time.sleep(0.02)
            cgroup.remove()
            shutil.rmtree(self.backend._home(account), ignore_errors=True)
            self.backend._log_path(account).unlink(missing_ok=True)
            subprocess.run(["userdel", account], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            mark.unlink(missing_ok=True)

    async def startup(self) -> None:
        """Remove what pooled sandboxes of an earlier hub left (once per hub process)."""
        if self._cleaned is None:
            self._cleaned = asyncio.ensure_future(self._remove_leftovers())
        await asyncio.shield(self._cleaned)

    async def _remove_leftovers(self) -> None:
        markers = await asyncio.get_running_loop().run_in_executor(
            None, lambda: sorted(self.pool_dir.iterdir()) if self.pool_dir.is_dir() else [])
        if markers:
            self.log.info("Warm pools: removing %d pooled sandbox(es) of an earlier hub", len(markers))
        for marker in markers:
            await self._destroy(marker.name)

    async def _destroy(self, account: str, pooled: Pooled | None = None) -> None:
        """End a pooled sandbox and remove its account, home, cgroup, log and mark."""
        if pooled is not None:
            pooled.channel.close()
        try:
            await self.backend.delete({"account": account})
        except Exception:
            self.log.exception("Warm pool: could not remove %s", account)
            return
        (self.pool_dir / account).unlink(missing_ok=True)
