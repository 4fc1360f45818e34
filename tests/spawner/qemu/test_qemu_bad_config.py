"""Bad configuration and failed boots: a clear message, and nothing left (no QEMU, no disk).

The backend is driven directly (a real QemuBackend, real qemu-img and QEMU); one case goes
through the hub to see the message reach the person."""
from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from tests.hubtools import free_port, make_state_dir, wait_for
from tests.spawner.qemu.conftest import create_vm, qemu_pids
from visa_spawner.backends.base import BackendError, InstanceSpec, Plan
from visa_spawner.backends.qemu.backend import QemuBackend, vm_name

VM_PLAN = Plan(id="vm", display_name="Virtual machine", backend="qemu", cpus=2, memory_mb=2048)


def spec(data: Path, plan: Plan = VM_PLAN, server: str = "bad") -> InstanceSpec:
    env = {"JUPYTERHUB_API_URL": "http://127.0.0.1:1/hub/api", "JUPYTERHUB_API_TOKEN": "t0k3n" * 8,
           "JUPYTERHUB_SERVICE_PREFIX": f"/user/alice/{server}/"}
    return InstanceSpec(owner="alice", server_name=server, instance_id=f"alice/{server}", display_name=server,
                        proposal="P-1", plan=plan, command=("jupyterhub-singleuser",), env=env, port=free_port(),
                        data_path=str(data))


def attempt(backend: QemuBackend, s: InstanceSpec) -> tuple[str, list[str]]:
    seen: list[str] = []
    with pytest.raises(BackendError) as e:
        asyncio.run(backend.create(s, lambda p, m: seen.append(m)))
    return e.value.message, seen


def assert_nothing_left(state: Path, s: InstanceSpec) -> None:
    assert not (state / "instances" / vm_name(s.owner, s.server_name)).exists()
    assert qemu_pids(state) == []


@pytest.fixture
def state():
    path = make_state_dir("visahub-qemu-bad-")
    (path / "data").mkdir()
    yield path
    for pid in qemu_pids(path):
        import os
        os.kill(pid, 9)
    import shutil
    shutil.rmtree(path, ignore_errors=True)


def test_missing_image(state, tmp_path):
    s = spec(state / "data")
    message, _ = attempt(QemuBackend(state_dir=str(state), image_dir=str(tmp_path / "none")), s)
    assert message.startswith("Virtual machines are not available") and "make image" in message
    assert_nothing_left(state, s)


@pytest.mark.qemu  # the built image
def test_no_qemu_binary(state, image_dir):
    s = spec(state / "data")
    message, _ = attempt(QemuBackend(state_dir=str(state), image_dir=image_dir, qemu_binary="/opt/none/qemu-system-x86_64"), s)
    assert "QEMU is not installed" in message and "qemu-system-x86" in message
    assert_nothing_left(state, s)


@pytest.mark.qemu  # the built image
def test_not_enough_memory(state, image_dir):
    huge = Plan(id="vm-huge", display_name="Huge", backend="qemu", cpus=2, memory_mb=4_000_000)
    s = spec(state / "data", plan=huge)
    message, _ = attempt(QemuBackend(state_dir=str(state), image_dir=image_dir), s)
    assert message.startswith("This host is too small for this plan")
    message, _ = attempt(QemuBackend(state_dir=str(state), image_dir=image_dir, max_vms=0), spec(state / "data"))
    assert message.startswith("This host is full: 0 of 0 virtual machines")
    assert_nothing_left(state, s)


@pytest.mark.qemu  # the built image
def test_corrupt_overlay_is_removed_with_a_message(state, image_dir):
    s = spec(state / "data")
    disk = state / "instances" / vm_name("alice", "bad") / "disk.qcow2"
    disk.parent.mkdir(parents=True)
    disk.write_bytes(b"QFI\xfb" + b"\0" * 4096)  # a qcow2 magic and nothing sensible after it
    message, _ = attempt(QemuBackend(state_dir=str(state), image_dir=image_dir), s)
    assert "disk was damaged" in message
    assert_nothing_left(state, s)


@pytest.mark.qemu  # the built image
def test_missing_data(state, image_dir):
    s = spec(state / "no-such-data")
    message, _ = attempt(QemuBackend(state_dir=str(state), image_dir=image_dir), s)
    assert message == "The data of proposal P-1 is not available on this host."
    assert_nothing_left(state, s)


@pytest.mark.qemu  # the built image
def test_qemu_that_dies_at_start(state, image_dir):
    s = spec(state / "data")
    backend = QemuBackend(state_dir=str(state), image_dir=image_dir, extra_args=["-no-such-qemu-option"])
    message, seen = attempt(backend, s)
    assert message.startswith("The virtual machine stopped during start") and "no-such-qemu-option" in message
    assert any(m.startswith("QEMU started") for m in seen), seen
    assert_nothing_left(state, s)
    assert not re.search(r"t0k3n", message)


@pytest.mark.qemu
@pytest.mark.root
def test_person_sees_the_full_host_message(hub, login):
    name = create_vm(login("alice"), "Too big VM", plan="vm-huge")
    wait_for(lambda: "This host is too small for this plan" in hub.log_path.read_text(errors="replace"), 60,
             "the capacity message in the hub log")
    model = wait_for(lambda: (m := hub.server_model("alice", name)) and not m.get("pending") and m, 60, "spawn ended")
    assert not model.get("ready")
