"""Instrument control from a real VM through a real hub (issue 18, part 6): the demo's D11 IOC and
the gateway run as the hub's services; alice's VM of P-2026-011 reads and moves D11's detector from
a kernel, through its one route (guestfwd 10.0.2.101:<gateway port>, relayed from its own
127.77.x.y, which the gateway decides by), and reaches nothing of the IOC's own ports.

One cold boot (TCG: minutes), so everything is checked on that one VM.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hubtools import Hub, demo_state, login_factory, run_code
from tests.instruments.test_hub_gateway import PVA
from tests.spawner.qemu.conftest import IMAGE_DIR, create_vm, pinned_image_dir, start_qemu_hub
from visa_spawner.backends.qemu.backend import vm_name
from visa_spawner.backends.qemu.command import GATEWAY_GUEST_ADDRESS

pytestmark = [pytest.mark.qemu, pytest.mark.root]

HOST_FROM_GUEST = "10.0.2.2"  # QEMU user networking's host; restrict=on must keep it out of reach

REACH = """
import json, socket
seen = {{}}
for host, port in {targets!r}:
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, port))
        seen[f"{{host}}:{{port}}"] = "connected"
    except OSError as e:
        seen[f"{{host}}:{{port}}"] = type(e).__name__
    finally:
        s.close()
print(json.dumps(seen))
"""


# This module's own hub (instruments on, cold boots): the directory's session hub has no instruments.
@pytest.fixture(scope="module")
def hub_state() -> Iterator[Path]:
    yield from demo_state()


@pytest.fixture(scope="module")
def hub(hub_state: Path) -> Iterator[Hub]:
    yield from start_qemu_hub(hub_state, pinned_image_dir(IMAGE_DIR, hub_state), VISA_DEMO_INSTRUMENTS="D11")


@pytest.fixture(scope="module")
def login(hub: Hub):
    return login_factory(hub)


def last_json(out: str) -> dict:
    lines = out.strip().splitlines()
    return json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {"error": out}


def test_alice_moves_d11_from_her_vm_through_the_gateway_only(hub, hub_state, login):
    alice = login("alice")
    name = create_vm(alice, "Beamtime VM")
    hub.wait_ready("alice", name, timeout=600)
    saved = json.loads((hub_state / "qemu" / "instances" / vm_name("alice", name) / "state.json").read_text())
    address = saved["instrument_address"]
    assert address.startswith("127.77."), saved
    gateway_port = int((hub_state / "visa_instrument_gateway_port").read_text())

    moved = last_json(run_code(alice, "alice", name, PVA, timeout=300))
    assert moved.get("env") == f"{GATEWAY_GUEST_ADDRESS}:{gateway_port}", moved
    assert moved.get("put") == "ok", moved
    assert abs(moved["moved"] - moved["target"]) < 1e-3, moved

    # the gateway saw the put come from this VM's own address, and put it down to alice's instance
    r = alice.s.get(f"{hub.url}/services/visa-instruments/api/audit",
                    params={"instrument": "D11", "owner": "alice"}, timeout=30)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    writes = [w for w in r.json()["writes"] if w["pv"] == "D11:DET:Z.VAL"]
    assert writes and writes[0]["peer"].rsplit(":", 1)[0] == address, writes
    assert writes[0]["allowed"] and writes[0]["server"] == name, writes[0]

    # nothing but the gateway route: the IOC's CA and PVA ports, on the host (as QEMU's 10.0.2.2 or the
    # guest's own loopback) and on the route's address, are out of reach; the route's port is not
    iocs = [int((hub_state / f"visa_ioc_d11_{kind}_port").read_text()) for kind in ("ca", "pva")]
    targets = [(host, port) for host in (HOST_FROM_GUEST, "127.0.0.1", GATEWAY_GUEST_ADDRESS) for port in iocs]
    seen = last_json(run_code(alice, "alice", name, REACH.format(targets=[*targets, (GATEWAY_GUEST_ADDRESS, gateway_port)]),
                              timeout=120))
    assert seen.pop(f"{GATEWAY_GUEST_ADDRESS}:{gateway_port}") == "connected", seen
    assert seen and all(v != "connected" for v in seen.values()), seen
