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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from visa_spawner.backends.qemu.accel import pid_runs
from visa_spawner.backends.qemu.command import VmLayout, overlay_argv, qemu_argv
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


async def build_snapshot(backend: Any, cpus: int, memory_mb: int, say: Callable[[str], None] = print) -> dict:
    """Boot, wait for the agent, save memory; return the snapshot's metadata (with timings).

    `backend` is a `QemuBackend` (its binaries, image, acceleration, state dir and relay)."""
    qemu, qemu_img = backend.binaries()
    image, accel = backend.image(), await backend.accel()
    key = snapshot_key(image.identity, cpus, memory_mb, accel.name)
    final = backend.pool.root / key
    if backend.pool.find(image.identity, cpus, memory_mb, accel.name):
        return json.loads((final / "meta.json").read_text())
    clean_stale_builds(backend.pool.root)
    work = backend.pool.root / f".{key}.{os.getpid()}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    empty = Path(backend.state_dir) / "empty"
    empty.mkdir(parents=True, exist_ok=True)
    snap = Snapshot(work)
    await _run_ok(*overlay_argv(qemu_img, image.base, snap.disk))
    layout = VmLayout(
        name=f"snap-{key[:12]}", overlay=snap.disk, kernel=image.kernel, initrd=image.initrd,
        kernel_cmdline=image.kernel_cmdline, qmp_socket=str(work / "qmp.sock"), agent_socket=str(work / "agent.sock"),
        console_log=str(work / "console.log"), cpus=cpus, memory_mb=memory_mb, host_port=_free_port(),
        data_dir=str(empty), hub_port=0, accel_argv=tuple(accel.argv), extra_args=tuple(backend.extra_args),
    )
    t0 = time.monotonic()
    say(f"booting a template VM ({cpus} CPU, {memory_mb} MB, {accel.name}) from {image.name}")
    proc = await launch(qemu_argv(qemu, layout), work / "qemu.log")
    (work / "qemu.pid").write_text(str(proc.pid))  # a builder killed mid-way leaves it: see clean_stale_builds
    try:
        await wait_qmp(layout.qmp_socket, proc, timeout=60)
        agent = AgentChannel(layout.agent_socket)
        await agent.connect(timeout=30)
        await asyncio.wait_for(_until_waiting(agent, proc), backend.boot_timeout)
        agent.close()
        booted = time.monotonic() - t0
        say(f"agent waits for its configuration after {booted:.1f} s; saving memory")
        t1 = time.monotonic()
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
        console = tail(work / "console.log")
        shutil.rmtree(work, ignore_errors=True)
        if isinstance(e, (asyncio.TimeoutError, ProcessLookupError)):
            raise SnapshotError(f"the template VM did not reach its agent ({e!r}); console:\n{console}") from None
        raise
    await terminate(proc.pid, snap.disk, layout.qmp_socket, 0, proc)
    meta = {"identity": image.identity, "image": image.name, "cpus": cpus, "memory_mb": memory_mb,
            "accel": accel.name, "boot_seconds": round(booted, 1), "save_seconds": round(saved, 1),
            "state_mb": os.path.getsize(snap.memory) // (1 << 20), "created": time.time()}
    (work / "meta.json").write_text(json.dumps(meta))
    for leftover in ("qmp.sock", "agent.sock", "qemu.pid"):
        (work / leftover).unlink(missing_ok=True)
    os.chmod(snap.disk, 0o400)  # frozen: overlays of instances are built on it
    os.rename(work, final)
    say(f"snapshot {key}: {meta['state_mb']} MB saved in {saved:.1f} s")
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
    from visa_spawner.backends.qemu.backend import QemuBackend

    p = argparse.ArgumentParser(description="Build the warm-start memory snapshot for one VM size.")
    p.add_argument("--state-dir", required=True, help="QemuBackend.state_dir of the hub")
    p.add_argument("--image-dir", default=None, help="QemuBackend.image_dir (default: the backend's)")
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--memory", type=int, default=2048, help="MB")
    args = p.parse_args(argv)
    kw = {"state_dir": args.state_dir, **({"image_dir": args.image_dir} if args.image_dir else {})}
    meta = asyncio.run(build_snapshot(QemuBackend(**kw), args.cpus, args.memory))
    print(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
