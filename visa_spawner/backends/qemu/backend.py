"""The `qemu` backend: a full virtual machine per instance on the hub's own host.

Each instance is a QEMU process started directly (no libvirt) and controlled over QMP, on a
qcow2 overlay of the analysis image (`make image`; the base is never written). The guest gets its
instance config (the one renderer in `cloudinit`) over fw_cfg at a cold boot, or over the boot
agent's virtio-serial port after a warm start from a memory snapshot (`qemu_warm`). Progress comes
from real stages: QEMU up, kernel lines on the serial console, the agent's stage lines, the start
script phoning home, and finally Jupyter answering HTTP through the forwarded port.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sys
import time
from pathlib import Path

from traitlets import Bool, CaselessStrEnum, Float, Integer, List, Unicode, default

from visa_spawner.backends.base import (
    Backend,
    BackendError,
    InstanceSpec,
    InstanceStatus,
    ProgressCallback,
    private_partial,
)
from visa_spawner.backends.guest import cloudinit
from visa_spawner.backends.guest.materials import DeliversMaterials
from visa_spawner.backends.guest.phonehome import BOARD
from visa_spawner.backends.instrument_net import AddressBook, gateway_port, instrument_env
from visa_spawner.backends.qemu import nocloud
from visa_spawner.backends.qemu import relay as qemu_relay
from visa_spawner.backends.qemu.accel import (
    Acceleration,
    capacity_problem,
    choose_acceleration,
    detect_acceleration,
    host_memory,
    pid_runs,
)
from visa_spawner.backends.qemu.boot import BootWatcher
from visa_spawner.backends.qemu.command import (
    GATEWAY_GUEST_ADDRESS,
    GUEST_JUPYTER_PORT,
    VmLayout,
    gateway_relay_argv,
    gateway_relay_command,
    guest_env,
    hub_port_of,
    mount_templates,
    overlay_argv,
    qemu_argv,
    relay_command,
    vm_size,
)
from visa_spawner.backends.qemu.image import DEFAULT_IMAGE_DIR, ImageError, VmImage, load_image
from visa_spawner.backends.qemu.paths import VmPaths, hostname, read_state, vm_name, vm_of, write_state
from visa_spawner.backends.qemu.restore import restore_disk
from visa_spawner.backends.qemu.state import QemuState
from visa_spawner.backends.qemu.vm import launch, tail, terminate, wait_qmp
from visa_spawner.backends.qemu.warm import Snapshot, SnapshotPool, TemplateVm, build_snapshot, prune_snapshots


class QemuBackend(DeliversMaterials, Backend):
    """Runs each instance as a QEMU virtual machine on this host."""

    state_dir = Unicode("/var/lib/visahub/qemu", config=True,
                        help="Where instance disks (overlays), sockets, logs and memory snapshots live.")
    image_dir = Unicode(DEFAULT_IMAGE_DIR, config=True,
                        help="The analysis image made by `make image` (its `current` build is used).")
    qemu_binary = Unicode("qemu-system-x86_64", config=True, help="QEMU system emulator (name on PATH or path).")
    qemu_img = Unicode("qemu-img", config=True, help="qemu-img (name on PATH or path), to make overlays.")
    acceleration = CaselessStrEnum(
        ["auto", "kvm", "tcg"], "auto", config=True,
        help="auto: KVM only when real hardware virtualisation works (not the PVM /dev/kvm), else TCG.",
    )
    boot_timeout = Float(300, config=True, help="Seconds from QEMU's start until Jupyter must answer.")
    desktop_timeout = Float(
        120, config=True,
        help="Seconds the desktop may take to start inside the VM (VISA_DESKTOP_TIMEOUT): TCG guests are "
        "slow to start Xvnc and the window manager on first use.")
    stop_grace = Float(20, config=True, help="Seconds between ACPI power-off and SIGKILL on stop.")
    max_vms = Integer(4, config=True, help="At most this many VMs run at once on this host.")
    memory_overhead_mb = Integer(
        256, config=True, help="QEMU's own memory per VM, added to the plan's memory for the capacity check.")
    memory_reserve_mb = Integer(
        1024, config=True, help="Memory (MB) always left to the host (hub, proxy, page cache).")
    warm_start = Bool(
        True, config=True,
        help="Start new instances from a memory snapshot of a booted, unconfigured VM when one matches "
        "their size; cold boot otherwise.",
    )
    build_snapshots = Bool(
        True, config=True,
        help="With warm_start: when no snapshot matches a new instance's size, build one in the background "
        "(one at a time, only if the host has room for one more VM) and prune those of older image "
        "builds that no instance uses. Off: only `python -m visa_spawner.backends.qemu.warm` builds them.",
    )
    config_delivery = CaselessStrEnum(
        ["fw_cfg", "nocloud"], "fw_cfg", config=True,
        help="How a cold-booted VM gets its instance config. fw_cfg: QEMU fw_cfg blobs read by the boot "
        "agent. nocloud: the cloud-init user-data the OpenStack backend sends, on a NoCloud seed disk, and no "
        "agent port (for the image's OpenStack variant, `image_dir` = its cache dir; no warm starts).")
    hub_relay = List(Unicode(), config=True,
                     help="Command run per guest connection to the hub ({port}: the hub API port).")
    gateway_relay = List(Unicode(), config=True,
                         help="With `instrument_gateway`: command run per guest connection to the gateway "
                         "({host}, {port}: the gateway; {source}: the VM's 127.77.x.y address, to bind).")
    extra_args = List(Unicode(), config=True, help="Extra QEMU arguments appended to every VM's command line.")

    @default("hub_relay")
    def _hub_relay_default(self) -> list[str]:
        return list(relay_command(shutil.which("socat"), sys.executable, qemu_relay.__file__))

    @default("gateway_relay")
    def _gateway_relay_default(self) -> list[str]:
        return list(gateway_relay_command(shutil.which("socat"), sys.executable, qemu_relay.__file__))

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._lock = asyncio.Lock()
        self._pending: dict[str, int] = {}  # vm → MB reserved while it boots
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._accel: Acceleration | None = None
        self.pool = SnapshotPool(Path(self.state_dir) / "snapshots")
        self._snapshot_build: asyncio.Task | None = None
        self.addresses = AddressBook()  # vm → 127.77.x.y (instrument gateway identity)

    # -- host checks ---------------------------------------------------------------------------
    def image(self) -> VmImage:
        try:
            image = load_image(self.image_dir)
        except ImageError as e:
            raise BackendError(f"Virtual machines are not available: {e}.", reason="image") from None
        if self.config_delivery == "nocloud" and not image.cloud_init:  # nothing would ever start it
            raise BackendError("Virtual machines are not available: the image has no cloud-init for "
                               "config_delivery = nocloud (an admin builds `--extra openstack`).", reason="image")
        return image

    def binaries(self) -> tuple[str, str]:
        found = shutil.which(self.qemu_binary), shutil.which(self.qemu_img)
        for path, name, package in ((found[0], self.qemu_binary, "qemu-system-x86"),
                                    (found[1], self.qemu_img, "qemu-utils")):
            if not path:
                raise BackendError(f"Virtual machines are not available: QEMU is not installed on this host "
                                   f"({name} not found; an admin installs the Debian package {package}).",
                                   reason="no-qemu")
        return found  # type: ignore[return-value]

    async def accel(self) -> Acceleration:
        if self._accel is None:
            self._accel = await choose_acceleration(self.binaries()[0], self.acceleration)
            self.log.info("QEMU acceleration: %s (%s)", self._accel.name, self._accel.reason)
        return self._accel

    def _capacity_problem(self, memory_mb: int, live: int) -> str:
        """Why one more VM would not fit ('' if it does), counting VMs still booting."""
        total, available = host_memory()
        return capacity_problem(
            memory_mb, running=live + len(self._pending), max_vms=self.max_vms, total_mb=total,
            available_mb=available - sum(self._pending.values()), overhead_mb=self.memory_overhead_mb,
            reserve_mb=self.memory_reserve_mb)

    def _check_capacity(self, memory_mb: int, live: int) -> None:
        """Raise 'This host is full' when the VM would not fit; called under the lock."""
        problem = self._capacity_problem(memory_mb, live)
        if problem:
            raise BackendError(problem, reason="capacity")

    # -- protocol ------------------------------------------------------------------------------
    async def create(self, spec: InstanceSpec, progress: ProgressCallback) -> dict:
        qemu, qemu_img = self.binaries()
        image = self.image()
        accel = await self.accel()
        cpus, memory = vm_size(spec.plan.cpus, spec.plan.memory_mb)
        vm = vm_name(spec.owner, spec.server_name)
        paths = VmPaths(Path(self.state_dir) / "instances" / vm)
        data_dir = await self._data_dir(spec)
        # a new disk gets the course's materials (checked before anything starts); a stopped VM's
        # disk or one restored from its archive keeps its home as it was
        new_home = spec.materials and not spec.restore_from and not await self._run_blocking(paths.overlay.exists)
        items = await self.materials.check(spec.materials) if new_home else None
        async with self._lock:
            live_states = await self._live()
            live = len(live_states)
            self._check_capacity(memory, live)
            self._pending[vm] = memory
            address = ""  # the VM's identity at the instrument gateway, unique among running and starting VMs
            if self.instrument_gateway:
                address = self.addresses.claim(vm, also_taken=[s.get("instrument_address") or "" for s in live_states])
        fresh, started = not paths.overlay.exists(), False
        restore = fresh and bool(spec.restore_from)  # its disk from an archive: a cold boot (restore.py)
        try:
            warm = fresh and self.warm_start and not restore and self.config_delivery == "fw_cfg"
            snapshot = self.pool.find(image.identity, cpus, memory, accel.name) if warm else None
            if warm and snapshot is None and self.build_snapshots:
                self.prepare_snapshot(cpus, memory, live)  # for the next instances; this one boots cold
            if restore:
                progress(10, "Restoring the virtual machine's disk from its archive")
                await restore_disk(qemu_img, spec.restore_from, paths.overlay)
            else:
                progress(10, "Preparing the virtual machine's disk" + (" (warm start)" if snapshot else ""))
                await self._prepare_disk(qemu_img, paths, image.base if snapshot is None else snapshot.disk, fresh)
            config = self._instance_config(spec, vm, address)
            layout = self._layout(vm, paths, image, accel, cpus, memory, spec, data_dir, snapshot, address)
            if self.config_delivery == "nocloud":
                await self._run_blocking(nocloud.write_seed, paths.seed, config, hostname(spec.server_name), vm)
            elif snapshot is None:
                await self._run_blocking(self._write_fw_cfg, paths, config)
            proc = await launch(qemu_argv(qemu, layout), paths.log)
            started = True
            self._procs[vm] = proc
            state = QemuState(
                backend=spec.plan.backend, owner=spec.owner, server_name=spec.server_name, vm=vm, pid=proc.pid,
                port=spec.port, overlay=str(paths.overlay), qmp=str(paths.qmp), accel=accel.name,
                warm=snapshot is not None, image=image.name, started=time.time(),
                snapshot=snapshot.dir.name if snapshot else "", instrument_address=address).to_dict()
            await self._run_blocking(write_state, paths, state)
            how = f"restoring a snapshot, {accel.name.upper()}" if snapshot else accel.name.upper()
            progress(20, f"QEMU started ({cpus} CPU, {memory} MB, {how})")
            await self._boot(spec, paths, proc, config, vm, snapshot, progress)
            await self.materials.push(spec, items, *await self.address(state), progress)  # before the route
            return state
        except BaseException as e:
            await self._abandon(vm, paths, fresh=fresh, started=started)
            if isinstance(e, (BackendError, asyncio.CancelledError)):
                raise
            self.log.exception("QEMU VM %s of %s: start failed", vm, spec.owner)
            raise BackendError("The virtual machine could not be started; ask an admin (details in the hub log).",
                               reason="qemu", log_detail=type(e).__name__) from None
        finally:
            self._pending.pop(vm, None)
            for _, leftover in paths.fw_cfg():  # the config holds the API token
                leftover.unlink(missing_ok=True)
            nocloud.remove_seed(paths.seed)

    async def address(self, state: dict) -> tuple[str, int]:
        return "127.0.0.1", QemuState.from_dict(state).port

    async def status(self, state: dict) -> InstanceStatus:
        saved = QemuState.from_dict(state)
        if not saved.pid or not saved.overlay:
            return InstanceStatus.STOPPED
        proc = self._procs.get(saved.vm)
        if proc is not None and proc.returncode is not None:
            return InstanceStatus.STOPPED
        if not pid_runs(saved.pid, saved.overlay):
            return InstanceStatus.STOPPED
        if saved.instrument_address:  # its relay binds this address: no new VM may get it (hub restart)
            self.addresses.claim(saved.vm, saved.instrument_address)
        return InstanceStatus.RUNNING

    async def stop(self, state: dict, now: bool = False) -> None:
        saved = QemuState.from_dict(state)
        vm = vm_of(saved)
        paths = VmPaths(Path(self.state_dir) / "instances" / vm)
        pid = saved.pid or QemuState.from_dict(await self._run_blocking(read_state, paths) or {}).pid
        if pid:
            await terminate(pid, str(paths.overlay), str(paths.qmp), 0 if now else self.stop_grace,
                            self._procs.get(vm), self.log)
        self._procs.pop(vm, None)
        self.addresses.release(vm)
        for runtime in (paths.qmp, paths.agent, paths.state, *(f for _, f in paths.fw_cfg())):
            runtime.unlink(missing_ok=True)

    async def delete(self, state: dict) -> None:
        vm = vm_of(QemuState.from_dict(state))
        await self.stop({**state, "vm": vm}, now=True)
        await self._run_blocking(shutil.rmtree, Path(self.state_dir) / "instances" / vm, True)

    archive_extension = ".qcow2"

    async def archive(self, state: dict, dest: Path) -> Path | None:
        """A compressed, self-contained qcow2 of the VM's disk (its overlay and the image under it,
        so it outlives image rebuilds); the VM is stopped first. None if it never had a disk."""
        vm = vm_of(QemuState.from_dict(state))
        await self.stop({**state, "vm": vm})
        overlay = VmPaths(Path(self.state_dir) / "instances" / vm).overlay
        if not await self._run_blocking(overlay.is_file):
            return None
        _, qemu_img = self.binaries()
        target = dest.with_name(dest.name + self.archive_extension)
        with private_partial(target) as partial:
            rc, out = await _run(qemu_img, "convert", "-c", "-O", "qcow2", str(overlay), str(partial))
            if rc:
                raise BackendError("The virtual machine's disk could not be archived, so it was not deleted; "
                                   "ask an admin.", reason="archive", log_detail=out[-400:])
        return target

    async def capacity(self) -> dict:
        """VM slots (`max_vms`) against VMs up or booting, the host's memory and the acceleration
        (the one in use, else what the host offers; a KVM probe VM is never started for this)."""
        live = await self._live()
        total, available = await self._run_blocking(host_memory)
        if self._accel is not None:
            accel = self._accel
        else:
            accel = await self._run_blocking(detect_acceleration, "/", self.acceleration)
        return {"slots": {"max": self.max_vms, "used": len(live) + len(self._pending)},
                "acceleration": accel.name, "acceleration_reason": accel.reason,
                "host": {"memory_total_mb": total, "memory_available_mb": available}, "gpus_free": 0}

    async def list_managed(self) -> list[dict]:
        def scan() -> list[dict]:
            out = []
            for d in sorted((Path(self.state_dir) / "instances").glob("vm-*")):
                out.append(read_state(VmPaths(d)) or {"backend": "qemu", "vm": d.name})
            return out
        return await self._run_blocking(scan)

    # -- steps ---------------------------------------------------------------------------------
    async def _boot(self, spec: InstanceSpec, paths: VmPaths, proc: asyncio.subprocess.Process, config: dict,
                    vm: str, snapshot: Snapshot | None, progress: ProgressCallback) -> None:
        token = spec.env.get("JUPYTERHUB_API_TOKEN", "")
        inbox = BOARD.register(token) if token else None
        watcher = BootWatcher(paths.console, paths.agent, proc, progress, vm=vm,
                              probe_path=spec.env.get("JUPYTERHUB_SERVICE_PREFIX", "/"), port=spec.port,
                              inbox=inbox, timeout=self.boot_timeout, log=self.log, has_data=bool(spec.data_path))
        try:
            await wait_qmp(str(paths.qmp), proc, timeout=60)
            for _, blob in paths.fw_cfg():  # QEMU has read them: the token leaves the disk
                blob.unlink(missing_ok=True)
            if snapshot is not None:
                await watcher.restore_and_configure({
                    "config": config, "script": cloudinit.START_SCRIPT, "seed": secrets.token_hex(64),
                    "hostname": hostname(spec.server_name), "time": time.time(),
                }, str(paths.qmp))
            await watcher.wait_ready()
        except ProcessLookupError:
            raise BackendError(f"The virtual machine stopped during start. Last QEMU messages:\n{tail(paths.log, 4)}"
                               f"\nLast console lines:\n{tail(paths.console, 6)}", reason="exited") from None
        finally:
            if inbox is not None:
                BOARD.unregister(inbox)

    def _instance_config(self, spec: InstanceSpec, vm: str, address: str = "") -> dict:
        hub_port = hub_port_of(spec.env)
        gateway_env = (instrument_env(f"{GATEWAY_GUEST_ADDRESS}:{gateway_port(self.instrument_gateway)}")
                       if address else {})
        try:
            return cloudinit.instance_config(
                owner=spec.owner, server_name=spec.server_name, display_name=spec.display_name,
                proposal=spec.proposal, command=spec.command,
                env={**guest_env(spec.env, hub_port), **gateway_env,
                     "VISA_DESKTOP_TIMEOUT": f"{self.desktop_timeout:g}"},
                port=GUEST_JUPYTER_PORT, screen=spec.screen, keyboard=spec.keyboard,
                proposal_title=spec.proposal_title, mount_templates=mount_templates(bool(spec.data_path)),
                data_path=spec.data_path, bind_address="0.0.0.0", start_timeout=self.boot_timeout,
            )
        except ValueError as e:
            raise BackendError("This proposal's data cannot be mounted.", reason="data", log_detail=str(e)) from None

    def _layout(self, vm: str, paths: VmPaths, image: VmImage, accel: Acceleration, cpus: int, memory: int,
                spec: InstanceSpec, data_dir: str, snapshot: Snapshot | None, address: str = "") -> VmLayout:
        seed = self.config_delivery == "nocloud"
        fw_cfg = () if snapshot or seed else tuple((name, str(path)) for name, path in paths.fw_cfg())
        try:
            gateway = gateway_relay_argv(self.gateway_relay, self.instrument_gateway, address) if address else ()
            return VmLayout(
                name=vm, overlay=str(paths.overlay), kernel=image.kernel, initrd=image.initrd,
                kernel_cmdline=image.kernel_cmdline, qmp_socket=str(paths.qmp), agent_socket=str(paths.agent),
                console_log=str(paths.console), cpus=cpus, memory_mb=memory, host_port=spec.port,
                data_dir=data_dir, hub_port=hub_port_of(spec.env), hub_relay=tuple(self.hub_relay),
                gateway_relay=gateway, gateway_port=gateway_port(self.instrument_gateway) if address else 0,
                accel_argv=tuple(accel.argv), fw_cfg=fw_cfg,
                incoming=snapshot.incoming_uri if snapshot else "", extra_args=tuple(self.extra_args),
                seed_dir=str(paths.seed) if seed else "", agent_port=not seed,
            )
        except ValueError as e:
            raise BackendError("The virtual machine is misconfigured on this host; ask an admin.",
                               reason="config", log_detail=str(e)) from None

    async def _data_dir(self, spec: InstanceSpec) -> str:
        if spec.data_path:
            if not os.path.isdir(spec.data_path):
                raise BackendError(f"The data of proposal {spec.proposal} is not available on this host.",
                                   reason="data", log_detail=f"missing {spec.data_path}")
            return spec.data_path
        empty = Path(self.state_dir) / "empty"  # the 9p device is always there (snapshots need it)
        await self._run_blocking(lambda: empty.mkdir(parents=True, exist_ok=True))
        return str(empty)

    async def _prepare_disk(self, qemu_img: str, paths: VmPaths, backing: str, fresh: bool) -> None:
        """A new overlay over `backing`, or a check of the instance's existing one."""
        await self._run_blocking(lambda: (paths.dir.mkdir(parents=True, exist_ok=True), os.chmod(paths.dir, 0o700)))
        if fresh:
            rc, out = await _run(*overlay_argv(qemu_img, backing, str(paths.overlay)))
            if rc:
                raise BackendError("The virtual machine's disk could not be created; ask an admin.",
                                   reason="disk", log_detail=out[-400:])
            return
        rc, out = await _run(qemu_img, "check", "-f", "qcow2", "-q", str(paths.overlay))
        if rc not in (0, 3):  # 3: leaked clusters only (harmless); else unreadable, corrupt, backing gone
            await self._run_blocking(shutil.rmtree, paths.dir, True)
            raise BackendError("This instance's disk was damaged and could not be used; it has been removed. "
                               "Start the instance again to get a fresh disk.", reason="disk", log_detail=out[-400:])

    def _write_fw_cfg(self, paths: VmPaths, config: dict) -> None:
        blobs = cloudinit.fw_cfg_files(config)
        for name, path in paths.fw_cfg():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(blobs[name])

    async def _abandon(self, vm: str, paths: VmPaths, *, fresh: bool, started: bool) -> None:
        """Undo a failed create: no process, no address; no disk either if the disk was new."""
        self.addresses.release(vm)
        if started:
            await self.stop({"vm": vm}, now=True)
        if fresh:
            await self._run_blocking(shutil.rmtree, paths.dir, True)

    # -- warm-start snapshots ------------------------------------------------------------------
    def prepare_snapshot(self, cpus: int, memory_mb: int, live: int = 0) -> asyncio.Task | None:
        """Build the snapshot for this size in the background (the running build's task if one
        runs; None when the host has no room for the template VM now: a later start tries again)."""
        if self._snapshot_build is not None and not self._snapshot_build.done():
            return self._snapshot_build
        problem = self._capacity_problem(memory_mb, live=max(live, len(self._procs)))
        if problem:
            self.log.info("Warm-start snapshot (%d CPU, %d MB) not built now: %s", cpus, memory_mb, problem)
            return None
        self._pending["snapshot"] = memory_mb
        self._snapshot_build = asyncio.ensure_future(self._build_snapshot(cpus, memory_mb))
        return self._snapshot_build

    async def snapshot_template(self) -> TemplateVm:
        """What `warm.build_snapshot` needs from this backend (BackendError when VMs cannot run here)."""
        qemu, qemu_img = self.binaries()
        return TemplateVm(qemu=qemu, qemu_img=qemu_img, image=await self._run_blocking(self.image),
                          accel=await self.accel(), pool=self.pool, empty_dir=Path(self.state_dir) / "empty",
                          boot_timeout=self.boot_timeout, extra_args=tuple(self.extra_args))

    async def _build_snapshot(self, cpus: int, memory_mb: int) -> dict | None:
        try:
            meta = await build_snapshot(await self.snapshot_template(), cpus, memory_mb,
                                        say=lambda m: self.log.info("Warm-start snapshot: %s", m))
            states = await self.list_managed()
            if any(s.get("warm") and "snapshot" not in s for s in states):
                return meta  # a warm VM from before snapshots were recorded: its base is unknown, keep all
            in_use = {s.get("snapshot", "") for s in states}
            pruned = await self._run_blocking(prune_snapshots, self.pool.root, meta["identity"], in_use)
            if pruned:
                self.log.info("Warm-start snapshots of older image builds removed: %s", ", ".join(pruned))
            return meta
        except Exception as e:  # noqa: BLE001 - instances still boot cold; the admin reads why here
            self.log.warning("Warm-start snapshot (%d CPU, %d MB) could not be built: %s", cpus, memory_mb, e)
            return None
        finally:
            self._pending.pop("snapshot", None)

    async def _live(self) -> list[dict]:
        return [s for s in await self.list_managed()
                if s.get("pid") and pid_runs(int(s["pid"]), str(s.get("overlay", "")))]

    @staticmethod
    async def _run_blocking(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def _run(*argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")
