"""Restoring a VM's archived disk: the spawner hands the owner's qemu archive to the qemu backend as
`restore_from` (fast, a recording backend), and `restore.restore_disk` makes a new instance's disk
of it with qemu-img (real qemu-img, no VM)."""
from __future__ import annotations

import hashlib
import json
import stat
import subprocess
from pathlib import Path

import pytest
from jupyterhub.objects import Hub
from jupyterhub.spawner import SpawnException
from traitlets.config import Config

from tests.spawner.test_archive_qemu import qemu_img, write_pattern
from tests.spawner.test_spawner import FakeBackend, FakeUser
from visa_spawner.archives import archive_instance
from visa_spawner.backends.base import BackendError, InstanceSpec, ProgressCallback
from visa_spawner.backends.qemu.backend import QemuBackend, VmPaths, vm_name
from visa_spawner.backends.qemu.restore import restore_argv, restore_disk
from visa_spawner.spawner import VisaSpawner

HERE = __name__
PLANS = [
    {"id": "vm", "display_name": "Virtual machine", "backend": "qemu", "cpus": 2, "memory_mb": 2048},
    {"id": "fake-small", "display_name": "Small fake", "backend": "fake", "cpus": 1, "memory_mb": 512, "default": True},
]
OPTIONS = {"proposal": "P-1", "plan": "vm", "screen": "1920x1080", "keyboard": "fr"}


class RecordingVms(FakeBackend):
    """Archives as the qemu backend names them; `create` keeps the spec it was given."""

    archive_extension = ".qcow2"
    spec: InstanceSpec | None = None

    async def archive(self, state: dict, dest: Path) -> Path:
        target = dest.with_name(dest.name + self.archive_extension)
        target.write_bytes(b"QFI\xfb a disk")
        return target

    async def create(self, spec: InstanceSpec, progress: ProgressCallback) -> dict:
        type(self).spec = spec
        return await super().create(spec, progress)


@pytest.fixture(autouse=True)
def fresh_backend():
    RecordingVms.clear_instance()
    RecordingVms.spec = None
    yield
    RecordingVms.clear_instance()


async def archived_vm(archive_dir: Path) -> str:
    """alice's deleted VM 'sans' of P-1, archived as the spawner does; its archive id."""
    archive = await archive_instance(RecordingVms.instance(), {}, archive_dir=str(archive_dir), owner="alice",
                                     server="sans", display_name="SANS", options=OPTIONS, backend_name="qemu")
    return archive.id


def spawner(tmp_path: Path, **options: str) -> VisaSpawner:
    config = Config()
    config.VisaSpawner.backend_classes = {"qemu": f"{HERE}.RecordingVms", "fake": f"{HERE}.RecordingVms"}
    config.VisaSpawner.plans = PLANS
    config.VisaSpawner.archive_dir = str(tmp_path / "archives")
    user_options = {**OPTIONS, **options}
    orm_spawner = type("Orm", (), {"name": "sans-again", "display_name": "SANS (restored)", "server": None,
                                   "user_options": user_options})()
    return VisaSpawner(user=FakeUser(), orm_spawner=orm_spawner, hub=Hub(), config=config, api_token="t" * 32,
                       user_options=user_options)


async def test_the_first_start_of_a_restored_vm_gets_its_archive_then_never_again(tmp_path):
    ident = await archived_vm(tmp_path / "archives")
    s = spawner(tmp_path, restore=ident)
    await s.start()
    assert RecordingVms.spec.plan.backend == "qemu"
    assert RecordingVms.spec.restore_from == str(tmp_path / "archives" / "alice" / f"{ident}.qcow2")
    await s.start()  # a restart: the disk is the instance's own by now
    assert RecordingVms.spec.restore_from == ""


async def test_a_vm_archive_is_not_restored_on_another_backend_nor_once_pruned(tmp_path):
    ident = await archived_vm(tmp_path / "archives")
    with pytest.raises(SpawnException, match="archive of a qemu instance cannot be restored on the plan Small fake"):
        await spawner(tmp_path, restore=ident, plan="fake-small").start()
    (tmp_path / "archives" / "alice" / f"{ident}.qcow2").unlink()  # retention ended
    with pytest.raises(SpawnException, match="no longer exists"):
        await spawner(tmp_path, restore=ident).start()
    assert RecordingVms.spec is None, "nothing was created"


def test_the_restore_command_never_probes_the_format():
    assert restore_argv("qemu-img", "/a/x.qcow2", "/i/disk.qcow2.partial") == [
        "qemu-img", "convert", "-q", "-f", "qcow2", "-O", "qcow2", "/a/x.qcow2", "/i/disk.qcow2.partial"]


async def test_a_missing_archive_makes_no_disk(tmp_path):
    disk = tmp_path / "vm" / "disk.qcow2"
    with pytest.raises(BackendError, match="no longer exists") as e:
        await restore_disk("qemu-img", tmp_path / "gone.qcow2", disk)
    assert e.value.reason == "restore" and not disk.exists()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.qemu
async def test_a_restored_disk_is_the_archived_one_standalone_and_private(tmp_path):
    base = tmp_path / "base.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(base), "64M")
    write_pattern(base, 0x11, "0")
    old = VmPaths(tmp_path / "qemu" / "instances" / vm_name("alice", "sans"))
    old.dir.mkdir(parents=True)
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(old.overlay))
    write_pattern(old.overlay, 0x5A, "8M")
    archive = await QemuBackend(state_dir=str(tmp_path / "qemu")).archive(
        {"owner": "alice", "server_name": "sans"}, tmp_path / "sans-x")
    before = sha256(archive)
    base.unlink()  # the image was rebuilt since: the restored disk does not need it

    new = VmPaths(tmp_path / "qemu" / "instances" / vm_name("alice", "sans-again"))
    await restore_disk("qemu-img", archive, new.overlay)

    assert stat.S_IMODE(new.dir.stat().st_mode) == 0o700 and stat.S_IMODE(new.overlay.stat().st_mode) == 0o600
    info = json.loads(qemu_img("info", "--output=json", str(new.overlay)))
    assert info["format"] == "qcow2" and "backing-filename" not in info
    out = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0x11 0 1M", "-c", "read -P 0x5a 8M 1M",
                          "-c", "write -P 0x77 16M 1M", str(new.overlay)], capture_output=True, text=True, check=True)
    assert "Pattern verification failed" not in out.stdout and out.stdout.count("read 1048576/1048576") == 2
    assert sha256(archive) == before, "the VM writes its own disk, never the archive"
    assert not list(new.dir.glob("*.partial"))


@pytest.mark.qemu
async def test_an_unreadable_archive_leaves_no_disk(tmp_path):
    bad = tmp_path / "bad.qcow2"
    bad.write_bytes(b"not a qcow2 at all" * 100)
    disk = tmp_path / "vm" / "disk.qcow2"
    with pytest.raises(BackendError, match="could not be restored") as e:
        await restore_disk("qemu-img", bad, disk)
    assert e.value.reason == "restore" and e.value.log_detail
    assert not disk.exists() and not list(disk.parent.glob("*.partial"))
