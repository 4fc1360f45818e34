"""Warm starts: memory snapshots of a booted VM whose boot agent waits for its configuration.

A snapshot is made once per (image build, vCPUs, memory, acceleration): boot a VM from an
overlay of the base with no instance config, wait for the agent's `waiting-config` line, save the
VM's memory with QMP `migrate` to a file, quit. The overlay it booted from (`disk.qcow2`) is then
frozen: the saved memory (page cache, open files, journal) matches exactly that disk. Each warm
instance gets its own overlay *of that frozen disk* and `-incoming` from the memory file, with a
new `vmgenid` (the guest kernel reseeds its random generator) and, over the agent port, its own
identity (machine-id, seed, hostname) and config. The frozen disk stays as long as overlays
built on it exist; an image rebuild gives new snapshots under new keys.

    python -m visa_spawner.backends.qemu.warm --state-dir DIR [--image-dir DIR] [--cpus 2] [--memory 2048]
        [--qemu BINARY] [--qemu-img BINARY] [--acceleration auto|kvm|tcg] [--boot-timeout S]
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shlex
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from visa_spawner.backends.qemu.accel import Acceleration, choose_acceleration, pid_runs
from visa_spawner.backends.qemu.command import VmLayout, overlay_argv, qemu_argv
from visa_spawner.backends.qemu.image import DEFAULT_IMAGE_DIR, ImageError, VmImage, load_image
from visa_spawner.backends.qemu.vm import AgentChannel, launch, qmp, tail, terminate, wait_qmp


@dataclass(frozen=True)
class Snapshot:
    dir: Path

    disk = property(lambda self: str(self.dir / "disk.qcow2"))
    memory = property(lambda self: str(self.dir / "memory.state"))
    meta = property(lambda self: self.dir / "meta.json")

    @property
    def incoming_uri(self) -> str:
        """QEMU 7.2 has no `file:` migration URI; `exec:` runs through /bin/sh, so quote."""
        return f"exec:cat {shlex.quote(self.memory)}"


def snapshot_key(identity: str, cpus: int, memory_mb: int, accel: str) -> str:
    return hashlib.sha256(f"{identity}\0{cpus}\0{memory_mb}\0{accel}".encode()).hexdigest()[:16]


class SnapshotPool:
    """Snapshots under `<state_dir>/snapshots/<key>/`, complete ones only (renamed into place)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find(self, identity: str, cpus: int, memory_mb: int, accel: str) -> Snapshot | None:
        snap = Snapshot(self.root / snapshot_key(identity, cpus, memory_mb, accel))
        ok = snap.meta.is_file() and os.path.isfile(snap.memory) and os.path.isfile(snap.disk)
        return snap if ok else None


class SnapshotError(Exception):
    pass


@dataclass(frozen=True)
class TemplateVm:
    """What a snapshot build needs from the backend: binaries, image, acceleration and where to put it.

    The backend (`QemuBackend.snapshot_template`) or the command line below fills it in; this
    module never looks at the backend itself."""

    qemu: str
    qemu_img: str
    image: VmImage
    accel: Acceleration
    pool: SnapshotPool
    empty_dir: Path  # shared as the 9p data device (cold and warm starts have the same devices)
    boot_timeout: float = 300
    extra_args: tuple[str, ...] = ()


async def build_snapshot(template: TemplateVm, cpus: int, memory_mb: int,
                         say: Callable[[str], None] = print) -> dict:
    """Boot, wait for the agent, save memory; return the snapshot's metadata (with timings).

    Every file operation that may take time (removing a half-built tree, renaming, writing the
    metadata) runs in the default executor: this runs on the hub's event loop."""
    image, accel = template.image, template.accel
    key = snapshot_key(image.identity, cpus, memory_mb, accel.name)
    final = template.pool.root / key
    existing = await asyncio.to_thread(_read_meta, template.pool, image.identity, cpus, memory_mb, accel.name)
    if existing is not None:
        return existing
    work = template.pool.root / f".{key}.{os.getpid()}.tmp"
    await asyncio.to_thread(_start_work, template.pool.root, work, template.empty_dir)
    snap = Snapshot(work)
    try:
        await _run_ok(*overlay_argv(template.qemu_img, image.base, snap.disk))
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, work, True)
        raise
    layout = VmLayout(
        name=f"snap-{key[:12]}", overlay=snap.disk, kernel=image.kernel, initrd=image.initrd,
        kernel_cmdline=image.kernel_cmdline, qmp_socket=str(work / "qmp.sock"), agent_socket=str(work / "agent.sock"),
        console_log=str(work / "console.log"), cpus=cpus, memory_mb=memory_mb, host_port=_free_port(),
        data_dir=str(template.empty_dir), hub_port=0, accel_argv=tuple(accel.argv),
        extra_args=tuple(template.extra_args),
    )
    t0 = time.monotonic()
    say(f"booting a template VM ({cpus} CPU, {memory_mb} MB, {accel.name}) from {image.name}")
    proc = await launch(qemu_argv(template.qemu, layout), work / "qemu.log")
    try:
        # a builder killed mid-way leaves it: see clean_stale_builds
        await asyncio.to_thread((work / "qemu.pid").write_text, str(proc.pid))
        await wait_qmp(layout.qmp_socket, proc, timeout=60)
        agent = AgentChannel(layout.agent_socket)
        await agent.connect(timeout=30)
        await asyncio.wait_for(_until_waiting(agent, proc), template.boot_timeout)
        agent.close()
        booted = time.monotonic() - t0
        say(f"agent waits for its configuration after {booted:.1f} s; saving memory")
        t1 = time.monotonic()
        # paused first: a live save of a busy guest (a prestarted desktop's clock and panel) gave
        # clones a corrupt kernel (a page written during the copy); a clone is resumed (boot.py)
        await qmp(layout.qmp_socket, "stop")
        await qmp(layout.qmp_socket, "migrate", {"uri": f"exec:cat > {shlex.quote(snap.memory)}"})
        while True:
            status = (await qmp(layout.qmp_socket, "query-migrate")).get("status")  # type: ignore[union-attr]
            if status == "completed":
                break
            if status in ("failed", "cancelled"):
                raise SnapshotError(f"saving the VM's memory failed ({status}); {tail(work / 'qemu.log', 3)}")
            await asyncio.sleep(0.1)
        saved = time.monotonic() - t1
        await qmp(layout.qmp_socket, "quit")
    except BaseException as e:
        await terminate(proc.pid, snap.disk, layout.qmp_socket, 0, proc)
        console = await asyncio.to_thread(_discard_work, work)
        if isinstance(e, (asyncio.TimeoutError, ProcessLookupError)):
            raise SnapshotError(f"the template VM did not reach its agent ({e!r}); console:\n{console}") from None
        raise
    await terminate(proc.pid, snap.disk, layout.qmp_socket, 0, proc)
    meta = {"identity": image.identity, "image": image.name, "cpus": cpus, "memory_mb": memory_mb,
            "accel": accel.name, "boot_seconds": round(booted, 1), "save_seconds": round(saved, 1),
            "created": time.time()}
    meta = await asyncio.to_thread(_finish_work, work, final, meta)
    say(f"snapshot {key}: {meta['state_mb']} MB saved in {saved:.1f} s")
    return meta


def _read_meta(pool: SnapshotPool, identity: str, cpus: int, memory_mb: int, accel: str) -> dict | None:
    snap = pool.find(identity, cpus, memory_mb, accel)
    return json.loads(snap.meta.read_text()) if snap else None


def _start_work(root: Path, work: Path, empty_dir: Path) -> None:
    """A fresh build directory (after removing half-built ones of dead builders) and the empty
    directory the template VM shares as its data."""
    clean_stale_builds(root)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    empty_dir.mkdir(parents=True, exist_ok=True)


def _discard_work(work: Path) -> str:
    """Remove a failed build; returns the template VM's last console lines for the message."""
    console = tail(work / "console.log")
    shutil.rmtree(work, ignore_errors=True)
    return console


def _finish_work(work: Path, final: Path, meta: dict) -> dict:
    """Write the metadata, freeze the disk and move the snapshot into place (complete ones only)."""
    meta = {**meta, "state_mb": os.path.getsize(work / "memory.state") // (1 << 20)}
    (work / "meta.json").write_text(json.dumps(meta))
    for leftover in ("qmp.sock", "agent.sock", "qemu.pid"):
        (work / leftover).unlink(missing_ok=True)
    os.chmod(work / "disk.qcow2", 0o400)  # frozen: overlays of instances are built on it
    os.rename(work, final)
    return meta


async def _until_waiting(agent: AgentChannel, proc: asyncio.subprocess.Process) -> None:
    async for message in agent.messages():
        if message.get("stage") == "waiting-config":
            return
    raise ProcessLookupError(f"the agent port closed (QEMU status {proc.returncode})")


async def _run_ok(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    if proc.returncode:
        raise SnapshotError(f"{argv[0]} failed: {out.decode(errors='replace')[-300:]}")


def clean_stale_builds(root: Path) -> list[str]:
    """Remove half-built snapshots whose builder process is gone (a hub restarted mid-build),
    killing their template QEMU; builds of live processes are left alone."""
    removed = []
    for work in root.glob(".*.tmp"):
        try:
            builder = int(work.name.rsplit(".", 2)[-2])
        except ValueError:
            continue
        if builder != os.getpid() and _alive(builder):
            continue
        try:
            qemu_pid = int((work / "qemu.pid").read_text())
        except (OSError, ValueError):
            qemu_pid = 0
        if qemu_pid and pid_runs(qemu_pid, str(work)):
            os.kill(qemu_pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)
        removed.append(work.name)
    return removed


def prune_snapshots(root: Path, keep_identity: str, in_use: set[str]) -> list[str]:
    """Remove complete snapshots of other image builds that no instance overlay is built on
    (`in_use`: snapshot directory names recorded in instances' state)."""
    removed = []
    for snap_dir in root.glob("[0-9a-f]*"):
        try:
            identity = json.loads((snap_dir / "meta.json").read_text()).get("identity")
        except (OSError, ValueError):
            continue
        if identity != keep_identity and snap_dir.name not in in_use:
            shutil.rmtree(snap_dir, ignore_errors=True)
            removed.append(snap_dir.name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Build the warm-start memory snapshot for one VM size.")
    p.add_argument("--state-dir", required=True, help="QemuBackend.state_dir of the hub")
    p.add_argument("--image-dir", default=DEFAULT_IMAGE_DIR, help="QemuBackend.image_dir (default: %(default)s)")
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--memory", type=int, default=2048, help="MB")
    p.add_argument("--qemu", default="qemu-system-x86_64", help="QemuBackend.qemu_binary")
    p.add_argument("--qemu-img", default="qemu-img", help="QemuBackend.qemu_img")
    p.add_argument("--acceleration", choices=("auto", "kvm", "tcg"), default="auto", help="QemuBackend.acceleration")
    p.add_argument("--boot-timeout", type=float, default=300, help="seconds")
    args = p.parse_args(argv)
    meta = asyncio.run(_build_from_args(args))
    print(json.dumps(meta, indent=1))


async def _build_from_args(args: argparse.Namespace) -> dict:
    binaries = shutil.which(args.qemu), shutil.which(args.qemu_img)
    if not all(binaries):
        raise SystemExit(f"QEMU is not installed ({args.qemu} or {args.qemu_img} not found)")
    try:
        image = load_image(args.image_dir)
    except ImageError as e:
        raise SystemExit(str(e)) from None
    state = Path(args.state_dir)
    template = TemplateVm(
        qemu=binaries[0], qemu_img=binaries[1], image=image,  # type: ignore[arg-type]
        accel=await choose_acceleration(binaries[0], args.acceleration),  # type: ignore[arg-type]
        pool=SnapshotPool(state / "snapshots"), empty_dir=state / "empty", boot_timeout=args.boot_timeout)
    return await build_snapshot(template, args.cpus, args.memory)


if __name__ == "__main__":
    main()
