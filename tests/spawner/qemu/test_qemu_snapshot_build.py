"""Snapshot builds with a stand-in for QEMU: the hub's event loop never stalls while the backend
builds and removes snapshots, and the command line builds one without a hub.

A snapshot build runs on the hub's loop (`QemuBackend.prepare_snapshot`). It removes half-built
snapshots of a hub killed mid-build and, once done, the snapshots of older image builds: trees of
hundreds of MB. Those removals, like every other file operation of the build, must run in an
executor, or every request to the hub waits for them.

What runs for real: the backend's own path (prepare_snapshot → build_snapshot → prune), qemu-img
making the template's overlay, the file work. What is faked: QEMU itself (tests/spawner/qemu/fake_qemu.py
answers QMP and the agent's port and streams a memory file, no guest boots) and the trees to
remove (many small files, which cost more to remove than a few big ones).
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from visa_spawner.backends.qemu.backend import QemuBackend

pytestmark = pytest.mark.qemu  # needs qemu-img; boots no VM

FAKE_QEMU = Path(__file__).resolve().parent / "fake_qemu.py"
MAX_STALL = 0.100  # seconds


def _runqueue_wait() -> float:
    """Seconds this process's threads have spent runnable but not running (/proc schedstat: the
    host's other work, not ours); 0 where the kernel does not tell."""
    total = 0
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return total / 1e9


class LoopLag:
    """How late the loop wakes a task that asks to sleep `interval`.

    `worst_wall` is the longest delay seen. On a shared, loaded host most of a delay can be time
    the process was runnable and not given a CPU, which no code of ours causes: `worst` is the
    longest delay less the time the process's threads waited for a CPU meanwhile (an upper bound
    of that wait when several threads waited at once, so a loaded host makes this lenient, never
    flaky). A blocking call on the loop (CPU work, a syscall that sleeps, a GIL hold by our own
    executor threads) counts in full."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval, self.worst, self.worst_wall, self.samples = interval, 0.0, 0.0, 0
        self._task: asyncio.Task | None = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked, waited = loop.time(), _runqueue_wait()
            await asyncio.sleep(self.interval)
            late = loop.time() - asked - self.interval
            self.worst_wall = max(self.worst_wall, late)
            self.worst = max(self.worst, late - (_runqueue_wait() - waited))
            self.samples += 1

    def __enter__(self) -> LoopLag:
        self._task = asyncio.ensure_future(self._watch())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def _tree(root: Path, files: int, per_dir: int = 500) -> None:
    """`files` small files under `root`, a few hundred per directory."""
    for d in range(0, files, per_dir):
        sub = root / f"d{d // per_dir:03d}"
        sub.mkdir(parents=True)
        for i in range(min(per_dir, files - d)):
            (sub / f"f{i}").write_bytes(b"x")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short path: the build's unix sockets must fit in 107 bytes."""
    d = Path(tempfile.mkdtemp(prefix="vl", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _fake_image(image_dir: Path, qemu_img: str) -> None:
    build = image_dir / "build-2"
    build.mkdir(parents=True)
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(build / "base.qcow2"), "64M"], check=True)
    for name in ("vmlinuz", "initrd.img"):
        (build / name).write_bytes(b"")
    (build / "manifest.json").write_text(json.dumps({"recipe_hash": "r2"}))
    (image_dir / "current").symlink_to(build)


def _fake_qemu_binary(where: Path) -> str:
    wrapper = where / "qemu-system-fake"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_QEMU} \"$@\"\n")
    wrapper.chmod(0o755)
    return str(wrapper)


def test_the_hubs_loop_never_stalls_while_a_snapshot_is_built_and_old_ones_removed(short_dir, monkeypatch):
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        pytest.skip("qemu-img is not installed (Debian package qemu-utils)")
    monkeypatch.setenv("FAKE_QEMU_STATE_MB", "64")
    _fake_image(short_dir / "image", qemu_img)
    snapshots = short_dir / "state" / "snapshots"
    half_built = snapshots / ".0123456789abcdef.999999999.tmp"  # of a builder that no longer runs
    old = snapshots / "fedcba9876543210"  # a complete snapshot of an older image build, unused
    _tree(half_built, 20_000)
    _tree(old, 20_000)
    (old / "meta.json").write_text(json.dumps({"identity": "r1:build-1"}))
    backend = QemuBackend(state_dir=str(short_dir / "state"), image_dir=str(short_dir / "image"),
                          qemu_binary=_fake_qemu_binary(short_dir), acceleration="tcg", boot_timeout=60,
                          memory_overhead_mb=0, memory_reserve_mb=0)

    async def build() -> tuple[dict | None, LoopLag]:
        with LoopLag() as lag:
            task = backend.prepare_snapshot(1, 256)  # what a cold start that finds no snapshot does
            assert task is not None, "the capacity check refused the template VM"
            meta = await task
        return meta, lag

    meta, lag = asyncio.run(build())
    print(f"loop: worst stall {lag.worst * 1000:.1f} ms ({lag.worst_wall * 1000:.1f} ms with the host's "
          f"CPU contention) over {lag.samples} wake-ups")
    assert meta is not None, "the build failed: see the warning logged above"
    assert meta["state_mb"] == 64 and meta["identity"] == "r2:build-2"
    assert not half_built.exists() and not old.exists()
    assert [p.name for p in snapshots.iterdir()] == [backend.pool.find("r2:build-2", 1, 256, "tcg").dir.name]
    assert lag.samples > 10, "the monitor barely ran: the build was too quick to say anything"
    assert lag.worst < MAX_STALL, f"the hub's event loop stalled for {lag.worst * 1000:.0f} ms"


def test_the_command_line_builds_a_snapshot_without_the_backend(short_dir):
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        pytest.skip("qemu-img is not installed (Debian package qemu-utils)")
    _fake_image(short_dir / "image", qemu_img)
    out = subprocess.run(
        [sys.executable, "-m", "visa_spawner.backends.qemu.warm", "--state-dir", str(short_dir / "state"),
         "--image-dir", str(short_dir / "image"), "--qemu", _fake_qemu_binary(short_dir), "--acceleration", "tcg",
         "--cpus", "1", "--memory", "256"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "FAKE_QEMU_STATE_MB": "4"})
    assert out.returncode == 0, out.stderr[-2000:]
    meta = json.loads(out.stdout[out.stdout.index("{"):])
    assert (meta["identity"], meta["cpus"], meta["memory_mb"], meta["accel"], meta["state_mb"]) == \
        ("r2:build-2", 1, 256, "tcg", 4)
    [snap] = (short_dir / "state" / "snapshots").iterdir()
    assert sorted(f.name for f in snap.iterdir()) == ["console.log", "disk.qcow2", "memory.state", "meta.json",
                                                       "qemu.log"]
