"""The embedded default backend: each instance is a bubblewrap sandbox on the hub's host.

One unprivileged Unix account per instance, its own persistent home, the proposal's data
read-only at /data/<proposal>, CPU/memory limits from the plan through a cgroup, and stop
kills the whole cgroup, so no Xvnc or window manager outlives its instance.
"""
from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

from traitlets import Float, Integer, List, Unicode

from visa_spawner.backends.base import (
    Backend,
    BackendError,
    InstanceSpec,
    InstanceStatus,
    Plan,
    ProgressCallback,
    private_partial,
)
from visa_spawner.backends.guest.protocol import mask_secrets
from visa_spawner.backends.instrument_net import AddressBook, instrument_env
from visa_spawner.backends.qemu.accel import host_memory
from visa_spawner.backends.sandbox.cgroups import Cgroup, CgroupError, Limits, join_cgroup_preexec
from visa_spawner.backends.sandbox.command import (
    SandboxLayout,
    account_name,
    bwrap_argv,
    proposal_mount_point,
    sandbox_env,
    sandbox_hostname,
)
from visa_spawner.backends.sandbox.home_tar import add_home
from visa_spawner.backends.sandbox.materials import copy_materials
from visa_spawner.backends.sandbox.network import BridgePipes, HubRoute, bridge_argv, gateway_route, hub_routes
from visa_spawner.backends.sandbox.pool import WarmPool, adopted_account, forget_adoption
from visa_spawner.backends.sandbox.state import SandboxState


def _tail(path: Path, lines: int = 6) -> str:
    """The last lines of a sandbox log, with anything that looks like a secret masked."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except FileNotFoundError:
        return ""
    return mask_secrets("\n".join(text))


def _tar_home(home: Path, target: Path) -> Path | None:
    """Write `home` as a tar.gz to `target` (0600), files under numeric owners only, following no
    link even if the running instance swaps one in meanwhile (`home_tar`)."""
    if not home.is_dir() or home.is_symlink():
        return None
    with private_partial(target) as partial, open(partial, "wb") as raw, \
            tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6) as tar:
        add_home(tar, home)
    return target


class SandboxBackend(Backend):
    """Runs each instance in a bubblewrap sandbox as its own Unix account."""

    state_dir = Unicode(
        "/var/lib/visahub/sandbox",
        config=True,
        help="Where homes (homes/<account>) and logs (logs/<account>.log) of sandboxes live. "
        "Must be on a file system the instance accounts can reach (not under /root).",
    )
    instance_env = Unicode(
        "/opt/visahub/instance-env",
        config=True,
        help="Python environment with jupyterhub-singleuser, JupyterLab and visa_instance, "
        "mounted read-only in every sandbox (made by scripts/setup.sh).",
    )
    account_prefix = Unicode("visa-", config=True, help="Prefix of per-instance Unix account names.")
    cgroup_parent = Unicode("visahub", config=True, help="Parent cgroup of all sandboxes.")
    start_timeout = Float(60, config=True, help="Seconds to wait for Jupyter to listen in the sandbox.")
    stop_grace = Float(5, config=True, help="Seconds between SIGTERM and SIGKILL on stop.")
    max_pids = Integer(4096, config=True, help="Process limit per sandbox (fork-bomb guard).")
    hub_url_env = List(
        Unicode(),
        default_value=["JUPYTERHUB_API_URL", "JUPYTERHUB_ACTIVITY_URL", "VISA_COLLAB_URL"],
        config=True,
        help="Environment variables holding the hub URLs an instance may reach. Each sandbox has "
        "its own network namespace; its bridge opens 127.0.0.1:<port> inside for each of these "
        "URLs (the host rewritten to 127.0.0.1) and nothing else of the host.",
    )

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._bridges: dict[str, asyncio.subprocess.Process] = {}
        self._ready_pipes: dict[str, int] = {}  # account → read end of its bridge's ready pipe
        self.addresses = AddressBook()  # account → 127.77.x.y (instrument gateway identity)
        self._warm_pool: WarmPool | None = None
        self.warm_pool  # noqa: B018 - made now: in the hub, it removes what an earlier hub's pools left

    # -- paths -------------------------------------------------------------------------------
    def _home(self, account: str) -> Path:
        return Path(self.state_dir) / "homes" / account

    def _log_path(self, account: str) -> Path:
        return Path(self.state_dir) / "logs" / f"{account}.log"

    def account_of(self, saved: SandboxState) -> str:
        """The saved account; else the pooled one the instance adopted (its state is cleared at
        each stop); else the one derived from (owner, server)."""
        if saved.account:
            return saved.account
        adopted = adopted_account(self.state_dir, saved.owner, saved.server_name) if saved.owner else ""
        return adopted or saved.account_or_derived(self.account_prefix)

    # -- steps -------------------------------------------------------------------------------
    async def create(self, spec: InstanceSpec, progress: ProgressCallback) -> dict:
        if spec.warm_pool and (adopted := await self.warm_pool.adopt(spec, progress)) is not None:
            return adopted
        account = adopted_account(self.state_dir, spec.owner, spec.server_name) or account_name(
            spec.owner, spec.server_name, self.account_prefix)
        hub_env, routes = self._hub_routes(spec)
        instrument_address, routes = self._instrument_route(account, hub_env, routes, spec.port)
        progress(20, "Preparing the instance's account and home")
        uid, gid = await self._ensure_account(account)
        home = self._home(account)
        fresh = await asyncio.get_running_loop().run_in_executor(None, self._prepare_dirs, home, uid, gid)
        if spec.restore_from and fresh:
            progress(30, "Restoring the home from its archive")
            await self._restore_home(Path(spec.restore_from), home, uid, gid)
        elif spec.materials and fresh:  # a course: its materials in a new home, the account's own
            progress(30, "Copying the course materials into the home")
            await self._copy_materials(spec.materials, home, uid, gid)

        cgroup = self._limited_cgroup(account, spec.plan)
        layout = self._layout(spec, account, uid, gid)
        inside_home = layout.home_inside
        env = sandbox_env(hub_env, home=inside_home, user=spec.owner, instance_env=self.instance_env)
        progress(40, f"Starting the sandbox ({spec.plan.cpus:g} CPU, {spec.plan.memory_mb} MB)")
        state = SandboxState(
            backend=spec.plan.backend, owner=spec.owner, server_name=spec.server_name, account=account,
            uid=uid, port=spec.port, instrument_address=instrument_address)
        proc, bridge = await self._launch(cgroup, layout, self._command(spec, layout.home_inside), env,
                                          routes, spec.port)
        state = {**state.to_dict(), "pid": proc.pid, "started": time.time()}
        progress(60, "Waiting for Jupyter in the sandbox")
        try:
            await self._wait_listening(account, proc, bridge)
        except BaseException:
            await self.stop(state, now=True)
            raise
        progress(80, "Jupyter is up; connecting through the hub")
        return state

    async def address(self, state: dict) -> tuple[str, int]:
        return "127.0.0.1", SandboxState.from_dict(state).port

    async def status(self, state: dict) -> InstanceStatus:
        saved = SandboxState.from_dict(state)
        account, pid = saved.account, saved.pid
        if not account or not pid:
            return InstanceStatus.STOPPED
        proc = self._procs.get(account)
        if proc is not None:
            return InstanceStatus.RUNNING if proc.returncode is None else InstanceStatus.STOPPED
        try:
            cgroup = Cgroup(account, parent=self.cgroup_parent)
        except CgroupError:
            return InstanceStatus.UNKNOWN
        # after a hub restart: the pid must still be alive *and* be ours (pids get reused)
        if not cgroup.contains(pid):
            return InstanceStatus.STOPPED
        if saved.instrument_address:  # its bridge still binds this address: no new instance may get it
            self.addresses.claim(account, saved.instrument_address)
        return InstanceStatus.RUNNING

    async def stop(self, state: dict, now: bool = False) -> None:
        account = SandboxState.from_dict(state).account
        if not account:
            return
        cgroup = Cgroup(account, parent=self.cgroup_parent)
        if not now and cgroup.signal_all(signal.SIGTERM):
            await self._wait_empty(cgroup, self.stop_grace)
        deadline = time.monotonic() + 10
        while cgroup.pids() and time.monotonic() < deadline:
            cgroup.signal_all(signal.SIGKILL)
            await asyncio.sleep(0.05)
        for procs in (self._procs, self._bridges):
            proc = procs.pop(account, None)
            if proc is not None:
                await proc.wait()
        if (ready := self._ready_pipes.pop(account, None)) is not None:  # never waited on (a pooled sandbox)
            os.close(ready)
        if cgroup.pids():
            self.log.error("Sandbox %s: processes survived SIGKILL: %s", account, cgroup.pids())
        else:
            self.addresses.release(account)
        cgroup.remove()

    async def delete(self, state: dict) -> None:
        account = self.account_of(SandboxState.from_dict(state))
        await self.stop({**state, "account": account}, now=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, shutil.rmtree, self._home(account), True)
        try:
            self._log_path(account).unlink()
        except FileNotFoundError:
            pass
        await self._run("userdel", account)
        forget_adoption(self.state_dir, state.get("owner", ""), state.get("server_name", ""))

    async def list_managed(self) -> list[dict]:
        homes = Path(self.state_dir) / "homes"
        return [{"backend": "sandbox", "account": p.name} for p in sorted(homes.glob(f"{self.account_prefix}*"))]

    async def capacity(self) -> dict:
        """The host every sandbox shares: its CPUs and memory (sandboxes have no GPU)."""
        total, available = await asyncio.get_running_loop().run_in_executor(None, host_memory)
        return {"host": {"cpus": len(os.sched_getaffinity(0)), "memory_total_mb": total,
                         "memory_available_mb": available}, "gpus_free": 0}

    archive_extension = ".tar.gz"

    async def archive(self, state: dict, dest: Path) -> Path | None:
        """A tar.gz of the home (numeric owners, as root, in an executor); None if it has no home."""
        home = self._home(self.account_of(SandboxState.from_dict(state)))
        target = dest.with_name(dest.name + self.archive_extension)
        return await asyncio.get_running_loop().run_in_executor(None, _tar_home, home, target)

    # -- helpers -----------------------------------------------------------------------------
    @property
    def warm_pool(self) -> WarmPool:
        """This host's warm pools of pre-started sandboxes (courses), made on first use."""
        if self._warm_pool is None:
            self._warm_pool = WarmPool(self, parent=self, log=self.log)
            self._warm_pool.startup_soon()
        return self._warm_pool

    def _limited_cgroup(self, account: str, plan: Plan) -> Cgroup:
        """The sandbox's cgroup with the plan's limits, or a BackendError."""
        cgroup = Cgroup(account, parent=self.cgroup_parent)
        try:
            cgroup.create(Limits(plan.cpus, plan.memory_mb, self.max_pids))
        except CgroupError as e:
            raise BackendError(
                "The host cannot enforce this plan's CPU and memory limits; ask an admin.",
                reason="limits", log_detail=str(e),
            ) from e
        return cgroup

    async def _launch(self, cgroup: Cgroup, layout: SandboxLayout, command: list[str], env: dict[str, str],
                      routes: tuple[HubRoute, ...], port: int, extra_fds: tuple[int, ...] = (),
                      ) -> tuple[asyncio.subprocess.Process, asyncio.subprocess.Process]:
        """Start the sandbox and its bridge in `cgroup` (the sandbox also gets `extra_fds`)."""
        account = cgroup.name
        # the bridge (same cgroup, so stop ends it too) joins the sandbox's own network namespace
        with open(self._log_path(account), "ab") as log_file, BridgePipes() as pipes:
            argv = bwrap_argv(layout, command, info_fd=pipes.info_w, block_fd=pipes.block_r)
            bridge = await asyncio.create_subprocess_exec(
                *bridge_argv(info_fd=pipes.info_r, block_fd=pipes.block_w, jupyter_port=port,
                             routes=routes, uid=layout.uid, gid=layout.gid, ready_fd=pipes.ready_w),
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                env={"LANG": "C.UTF-8"}, start_new_session=True, pass_fds=pipes.bridge_fds,
                preexec_fn=join_cgroup_preexec(cgroup.procs_files()),
            )
            self._bridges[account] = bridge
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, pass_fds=(*pipes.sandbox_fds, *extra_fds),
                preexec_fn=join_cgroup_preexec(cgroup.procs_files()),
            )
            self._procs[account] = proc
            if (stale := self._ready_pipes.pop(account, None)) is not None:
                os.close(stale)
            self._ready_pipes[account] = pipes.take_ready()
        return proc, bridge

    def _command(self, spec: InstanceSpec, home_inside: str) -> list[str]:
        """Resolve a bare command name to the instance environment's copy; open Lab in home."""
        cmd = list(spec.command)
        if cmd and "/" not in cmd[0]:
            cmd[0] = f"{self.instance_env}/bin/{cmd[0]}"
        return cmd + [f"--FileContentsManager.preferred_dir={home_inside}"]

    def _hub_routes(self, spec: InstanceSpec) -> tuple[dict[str, str], tuple[HubRoute, ...]]:
        """The sandbox's environment and its only ways out (the hub's URLs), or a BackendError."""
        try:
            return hub_routes(spec.env, self.hub_url_env, jupyter_port=spec.port)
        except ValueError as e:
            raise BackendError("The hub's address cannot be given to the instance; ask an admin.",
                               reason="network", log_detail=str(e)) from e

    def _instrument_route(self, account: str, env: dict[str, str], routes: tuple[HubRoute, ...],
                          jupyter_port: int) -> tuple[str, tuple[HubRoute, ...]]:
        """With an instrument gateway: the instance's own source address, one more route (to the
        gateway, bound to that address) and the EPICS variables naming it inside (`env`, in place)."""
        if not self.instrument_gateway:
            return "", routes
        address = self.addresses.claim(account)
        try:
            route = gateway_route(self.instrument_gateway, address, routes, jupyter_port=jupyter_port)
        except ValueError as e:
            self.addresses.release(account)
            raise BackendError("The instrument gateway cannot be given to the instance; ask an admin.",
                               reason="network", log_detail=str(e)) from e
        env.update(instrument_env(f"127.0.0.1:{route.port}"))
        return address, (*routes, route)

    def _layout(self, spec: InstanceSpec, account: str, uid: int, gid: int) -> SandboxLayout:
        data_inside = ""
        if spec.data_path:
            try:
                data_inside = proposal_mount_point(spec.proposal)
            except ValueError as e:
                raise BackendError("This proposal's data cannot be mounted.", reason="data", log_detail=str(e)) from e
            if not os.path.isdir(spec.data_path):
                raise BackendError(
                    f"The data of proposal {spec.proposal} is not available on this host.",
                    reason="data", log_detail=f"missing {spec.data_path}",
                )
        return SandboxLayout(
            uid=uid, gid=gid, home_host=str(self._home(account)), home_inside=f"/home/{account}",
            instance_env=self.instance_env, data_host=spec.data_path, data_inside=data_inside,
            hostname=sandbox_hostname(spec.server_name),
        )

    def _prepare_dirs(self, home: Path, uid: int, gid: int) -> bool:
        """The state directories and the home (True: the home is new)."""
        # the state dir and homes/ are traversable (0711) but not listable; logs are root's only
        for d, mode in ((Path(self.state_dir), 0o711), (home.parent, 0o711), (Path(self.state_dir) / "logs", 0o700)):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, mode)
        fresh = not home.exists()
        home.mkdir(exist_ok=True)
        os.chown(home, uid, gid)
        os.chmod(home, 0o700)
        return fresh

    async def _restore_home(self, archive: Path, home: Path, uid: int, gid: int) -> None:
        """Unpack an archived home into a new one, as the instance's own account (its rights
        bound what a crafted archive could write); on failure the home is removed, so the next
        start does not find a half-restored home and keep it."""
        try:
            with open(archive, "rb") as f:  # root's file: the account reads it through stdin
                proc = await asyncio.create_subprocess_exec(
                    "tar", "--extract", "--gzip", "--file=-", "--no-same-owner", f"--directory={home}",
                    stdin=f, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=home,
                    user=uid, group=gid, extra_groups=[], env={"LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"})
                out, _ = await proc.communicate()
        except OSError as e:
            out, proc = str(e).encode(), None
        if proc is None or proc.returncode:
            await asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, home, True)
            raise BackendError("The archived home could not be restored into this instance; ask an admin.",
                               reason="restore", log_detail=out.decode(errors="replace")[-400:])

    async def _copy_materials(self, materials: str, home: Path, uid: int, gid: int) -> None:
        """A course's materials into a new home (`materials.copy_materials`); on failure the home is
        removed, so the next start copies them again rather than keeping half of them."""
        try:
            if not os.path.isdir(materials):
                raise FileNotFoundError(f"no materials folder {materials}")
            await asyncio.get_running_loop().run_in_executor(None, copy_materials, Path(materials), home, uid, gid)
        except OSError as e:
            await asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, home, True)
            raise BackendError("The course materials could not be copied into this instance; ask the trainer.",
                               reason="materials", log_detail=str(e)) from e

    async def _ensure_account(self, account: str) -> tuple[int, int]:
        try:
            entry = pwd.getpwnam(account)
        except KeyError:
            await self._run(
                "useradd", "--system", "--user-group", "--no-create-home",
                "--home-dir", f"/home/{account}", "--shell", "/usr/sbin/nologin",
                "--comment", "VISA Hub instance", account,
            )
            entry = pwd.getpwnam(account)
        return entry.pw_uid, entry.pw_gid

    async def _run(self, *argv: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        if proc.returncode not in (0, 6):  # userdel: 6 = no such user
            raise BackendError(
                "The host could not prepare the instance's account; ask an admin.",
                reason="account", log_detail=f"{argv[0]} failed: {out.decode(errors='replace').strip()}",
            )

    async def _wait_listening(self, account: str, proc: asyncio.subprocess.Process,
                              bridge: asyncio.subprocess.Process) -> None:
        """Until the bridge says Jupyter is published: one byte on its ready pipe, waited on, not
        polled (a poll found Jupyter up to 0.25 s late). Else a BackendError saying why: the
        sandbox or its bridge exited (end of file), or the start timeout passed."""
        loop, fd = asyncio.get_running_loop(), self._ready_pipes.pop(account)
        said: asyncio.Future[bytes] = loop.create_future()
        loop.add_reader(fd, lambda: said.done() or said.set_result(os.read(fd, 1)))
        exits = [asyncio.ensure_future(proc.wait()), asyncio.ensure_future(bridge.wait())]
        try:
            await asyncio.wait([said, *exits], timeout=self.start_timeout, return_when=asyncio.FIRST_COMPLETED)
            if said.done() and said.result() == b"1":
                return
            if said.done():  # end of file: the bridge ended; let its exit (or the sandbox's) be seen
                await asyncio.wait(exits, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        finally:
            loop.remove_reader(fd)
            os.close(fd)
            for wait in exits:
                wait.cancel()
        log_path = self._log_path(account)
        if proc.returncode is not None:
            raise BackendError(
                f"The sandbox exited during start (status {proc.returncode}). Last log lines:\n{_tail(log_path)}",
                reason="exited",
            )
        if bridge.returncode is not None or said.done():
            raise BackendError(
                f"The sandbox's network bridge exited during start. Last log lines:\n{_tail(log_path)}",
                reason="network",
            )
        raise BackendError(
            f"Jupyter did not start within {self.start_timeout:g} s. Last log lines:\n{_tail(log_path)}",
            reason="timeout",
        )

    @staticmethod
    async def _wait_empty(cgroup: Cgroup, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while cgroup.pids() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
