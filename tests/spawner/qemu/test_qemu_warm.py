"""Warm start: two instances restored from one memory snapshot are different machines, each
configured for its own owner after the restore, and one owner cannot open the other's."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.hubtools import run_code
from tests.spawner.qemu.conftest import create_vm, qemu_pids
from visa_spawner.backends.qemu.backend import QemuBackend

pytestmark = [pytest.mark.qemu, pytest.mark.root]

IDENTITY = """
import getpass, hashlib, json, os, socket
print(json.dumps({"user": getpass.getuser(), "machine_id": open("/etc/machine-id").read().strip(),
                  "hostname": socket.gethostname(), "random": os.urandom(16).hex(),
                  "token": hashlib.sha256(os.environ["JUPYTERHUB_API_TOKEN"].encode()).hexdigest(),
                  "boot_id": open("/proc/sys/kernel/random/boot_id").read().strip()}))
"""


async def prepare_snapshot(backend: QemuBackend, cpus: int, memory_mb: int) -> dict:
    """What the hub's backend does when no snapshot matches (it awaits nothing: the task runs on)."""
    task = backend.prepare_snapshot(cpus, memory_mb)
    assert task is not None, "the host has no room for the template VM"
    meta = await task
    assert meta, "the snapshot build failed: see the warnings above"
    return meta


def test_two_clones_of_one_snapshot_are_different_machines(hub, login, qemu_state, image_dir):
    meta = asyncio.run(prepare_snapshot(QemuBackend(state_dir=str(qemu_state), image_dir=image_dir), 2, 2048))
    print("snapshot:", meta)
    alice, bob = login("alice"), login("bob")
    t0 = time.monotonic()
    a = create_vm(alice, "Warm A")
    b = create_vm(bob, "Warm B")
    hub.wait_ready("alice", a, timeout=300)
    hub.wait_ready("bob", b, timeout=300)
    print(f"two warm starts ready after {time.monotonic() - t0:.1f} s")
    assert hub.log_path.read_text(errors="replace").count("Memory snapshot restored") >= 2
    ia = json.loads(run_code(alice, "alice", a, IDENTITY, timeout=120))
    ib = json.loads(run_code(bob, "bob", b, IDENTITY, timeout=120))
    assert (ia["user"], ib["user"]) == ("alice", "bob")
    assert ia["boot_id"] == ib["boot_id"], "both must really come from the same saved machine"
    for key in ("machine_id", "hostname", "random", "token"):
        assert ia[key] != ib[key], f"{key} is the same in both clones"
    assert len(qemu_pids(qemu_state)) == 2

    r = alice.instance_get("bob", b, "api/status")  # through the hub's OAuth, as a browser would
    assert r.status_code == 403 or "/user/bob/" not in r.url, (r.status_code, r.url)
    r = alice.instance_api("GET", "bob", b, "api/contents")
    assert r.status_code in (403, 404) or "/user/bob/" not in r.url, (r.status_code, r.url)
