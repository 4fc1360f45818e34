"""Instrument control from a real VM through a real hub (issue 18, part 6): the demo's D11 IOC and
the gateway run as the hub's services; alice's VM of P-2026-011 reads and moves D11's detector from
a kernel, through its one route (guestfwd 10.0.2.101:<gateway port>, relayed from its own
127.77.x.y, which the gateway decides by), and reaches nothing of the IOC's own ports; the
instrument panel (PyDM inside the VM) moves it too.

One cold boot (TCG: minutes), so everything is checked on that one VM.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from p4p.client.thread import Context

from tests.collab.helpers import Person
from tests.hubtools import Hub, demo_state, run_code
from tests.instance.jupyter import ARTIFACTS
from tests.instance.test_instrument_display import type_into
from tests.instance.test_instrument_gateway_panel import DET_Z_VAL
from tests.instruments.test_hub_gateway import PVA
from tests.rfb import RfbClient
from tests.spawner.qemu.conftest import IMAGE_DIR, create_vm, pinned_image_dir, start_qemu_hub
from tests.support import wait_for
from visa_instruments.gateway import tcp_client_conf
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


def last_json(out: str) -> dict:
    lines = out.strip().splitlines()
    return json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {"error": out}


def audited_writes(owner: Person, pv: str) -> list[dict]:
    """The gateway's audit of D11, as the instance's owner reads it, for one PV (newest first)."""
    r = owner.s.get(f"{owner.hub.url}/services/visa-instruments/api/audit",
                    params={"instrument": "D11", "owner": owner.name}, timeout=30)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    return [w for w in r.json()["writes"] if w["pv"] == pv]


def panel_moves_the_detector(alice: Person, server: str, target: str, ioc: Context) -> list[dict]:
    """alice opens 'Instrument control — D11' of her VM and types a DET:Z setpoint; the gateway's
    audit rows of that put, once the IOC (`ioc`: the facility's own view) has moved there. Typed
    again while PyDM (started by the websocket, slow under TCG) is still connecting its channels."""
    assert alice.open_instance("alice", server, "visa/instrument/D11").status_code == 200
    rfb = RfbClient(alice.websocket("alice", server, "instrument-d11/", timeout=300))
    try:
        assert rfb.name == "Instrument control — D11" and (rfb.width, rfb.height) == (1280, 720)

        def typed_and_written() -> list[dict]:
            type_into(rfb, *DET_Z_VAL, target)
            return wait_for(lambda: [w for w in audited_writes(alice, "D11:DET:Z.VAL")
                                     if float(w["new_value"] or "nan") == float(target)], 10, "the put")

        writes = wait_for(typed_and_written, 240, "the panel's put through the gateway", interval=1)
        wait_for(lambda: ioc.get("D11:DET:Z.DMOV", timeout=5) == 1
                 and ioc.get("D11:DET:Z.RBV", timeout=5) == float(target), 60, f"the detector to arrive at {target} m")
        ARTIFACTS.mkdir(exist_ok=True)
        rfb.save_png(ARTIFACTS / "instrument-panel-D11-vm.png")
        return writes
    finally:
        rfb.close()


def test_alice_moves_d11_from_her_vm_through_the_gateway_only(hub, hub_state):
    alice = Person(hub, "alice")
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
    writes = audited_writes(alice, "D11:DET:Z.VAL")
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

    # the GUI inside the VM: the panel's put goes the same way, from the same address
    target = "12.5" if moved["target"] != 12.5 else "11.5"
    ioc_pva = int((hub_state / "visa_ioc_d11_pva_port").read_text())
    with Context("pva", conf=tcp_client_conf([f"127.0.0.1:{ioc_pva}"]), useenv=False) as ioc:
        writes = panel_moves_the_detector(alice, name, target, ioc)
    assert writes[0]["allowed"] and writes[0]["peer"].rsplit(":", 1)[0] == address, writes[0]
