"""The qemu backend archives a VM's disk as one compressed, self-contained qcow2 (qemu-img, no VM)."""
from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from visa_spawner.backends.qemu.backend import QemuBackend, VmPaths, vm_name

pytestmark = pytest.mark.qemu  # qemu-img and qemu-io


def qemu_img(*argv: str) -> str:
    return subprocess.run(["qemu-img", *argv], capture_output=True, text=True, check=True).stdout


def write_pattern(disk: Path, byte: int, offset: str) -> None:
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P {byte} {offset} 1M", str(disk)],
                   capture_output=True, check=True)


async def test_the_archive_is_the_whole_disk_compressed_without_its_backing_image(tmp_path):
    base = tmp_path / "base.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(base), "64M")
    write_pattern(base, 0x11, "0")  # the analysis image's bytes
    vm = vm_name("alice", "sans")
    paths = VmPaths(tmp_path / "qemu" / "instances" / vm)
    paths.dir.mkdir(parents=True)
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(paths.overlay))
    write_pattern(paths.overlay, 0x5A, "8M")  # what the person wrote in the VM

    backend = QemuBackend(state_dir=str(tmp_path / "qemu"))
    (tmp_path / "out").mkdir()  # archive_instance makes the owner's directory
    archive = await backend.archive({"owner": "alice", "server_name": "sans"}, tmp_path / "out" / "sans-x")
    assert archive == tmp_path / "out" / "sans-x.qcow2"
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    info = json.loads(qemu_img("info", "--output=json", str(archive)))
    assert info["format"] == "qcow2" and "backing-filename" not in info
    base.unlink()  # the image may be rebuilt or pruned later: the archive does not need it
    paths.overlay.unlink()
    out = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0x11 0 1M", "-c", "read -P 0x5a 8M 1M",
                          str(archive)], capture_output=True, text=True, check=True).stdout
    assert "Pattern verification failed" not in out and out.count("read 1048576/1048576 bytes") == 2
    assert not list(archive.parent.glob("*.partial"))


async def test_a_vm_that_never_had_a_disk_has_nothing_to_archive(tmp_path):
    backend = QemuBackend(state_dir=str(tmp_path / "qemu"))
    assert await backend.archive({"owner": "alice", "server_name": "gone"}, tmp_path / "gone") is None
    assert not list(tmp_path.glob("gone*"))


async def test_flattening_runs_in_qemu_img_while_the_event_loop_keeps_serving(tmp_path):
    """The minute of CPU a real VM's archive takes is qemu-img's, in its own process: the hub's loop
    (here the test's) keeps ticking every few ms meanwhile."""
    raw = tmp_path / "noise.raw"
    with raw.open("wb") as f:  # incompressible: zlib works for every cluster
        for _ in range(96):
            f.write(os.urandom(1 << 20))
    vm = vm_name("alice", "busy")
    paths = VmPaths(tmp_path / "qemu" / "instances" / vm)
    paths.dir.mkdir(parents=True)
    qemu_img("convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(paths.overlay))
    raw.unlink()
    backend = QemuBackend(state_dir=str(tmp_path / "qemu"))

    gaps: list[float] = []
    archiving = asyncio.ensure_future(backend.archive({"owner": "alice", "server_name": "busy"}, tmp_path / "busy"))
    last = time.monotonic()
    while not archiving.done():
        await asyncio.sleep(0.005)
        now = time.monotonic()
        gaps.append(now - last)
        last = now
    assert (await archiving).is_file()
    took = sum(gaps)
    assert took > 0.3 and len(gaps) > 30, f"too quick to tell ({took:.2f} s)"
    assert max(gaps) < 0.25, f"the loop stalled {max(gaps):.3f} s during a {took:.1f} s archive"
