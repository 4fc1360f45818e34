"""The demo's instruments through a real hub (issue 18): IOCs and gateway started as the hub's
services, reached from inside real sandboxes through their one route, decided from the hub's truth.

alice (INSTRUMENT_CONTROL, team of P-2026-011, D11's experiment in progress on the demo's date)
moves D11's detector from a kernel of her instance; bob (same proposal, no INSTRUMENT_CONTROL)
reads it but his put is refused; neither reaches the IOC's own ports.
"""
from __future__ import annotations

import json

import pytest

from tests.hubtools import run_code, unique
from tests.spawner.sandbox.test_instances import ALICE_PROPOSAL, create

pytestmark = pytest.mark.root

PVA = """
import json, os, time
from p4p.client.thread import Context
out = {"env": os.environ.get("EPICS_PVA_NAME_SERVERS")}
ctx = Context("pva", conf={"EPICS_PVA_NAME_SERVERS": os.environ["EPICS_PVA_NAME_SERVERS"],
                           "EPICS_PVA_AUTO_ADDR_LIST": "NO", "EPICS_PVA_ADDR_LIST": ""}, useenv=False)
rbv = float(ctx.get("D11:DET:Z.RBV", timeout=10))
out["rbv"] = rbv
target = round(rbv + 0.4 if rbv < 10 else rbv - 0.4, 3)
out["target"] = target
try:
    ctx.put("D11:DET:Z.VAL", target, timeout=10, wait=True)
    out["put"] = "ok"
except Exception as e:
    out["put"] = f"{type(e).__name__}: {e}"
deadline = time.monotonic() + 30
while out["put"] == "ok" and time.monotonic() < deadline:
    out["moved"] = float(ctx.get("D11:DET:Z.RBV", timeout=10))
    if abs(out["moved"] - target) < 1e-3:
        break
    time.sleep(0.2)
ctx.close()
print(json.dumps(out))
"""

DIRECT = """
import json, socket
ports = {ports!r}
seen = {{}}
for name, port in ports.items():
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
        seen[name] = "connected"
    except OSError as e:
        seen[name] = type(e).__name__
    finally:
        s.close()
print(json.dumps(seen))
"""


def ioc_ports(hub) -> dict[str, int]:
    return {f"{i}-{kind}": int((hub.state / f"visa_ioc_{i}_{kind}_port").read_text())
            for i in ("d11", "in5") for kind in ("ca", "pva")}


def listeners(ports) -> dict[int, str]:
    """Who listens on these host ports (the diagnosis when a probe connects)."""
    import psutil

    found = {}
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port in set(ports) and conn.pid:
            found[conn.laddr.port] = " ".join(psutil.Process(conn.pid).cmdline())[:160]
    return found


def pva_from(client, owner: str, server: str) -> dict:
    out = run_code(client, owner, server, PVA, timeout=90)
    return json.loads(out.strip().splitlines()[-1]) if out.strip().startswith("{") else {"error": out}


def test_alice_moves_d11_bob_only_reads_nobody_reaches_the_ioc(hub, login):
    alice, bob = login("alice"), login("bob")
    mine, his = create(alice, unique("Beamtime")), create(bob, unique("Reading"), proposal=ALICE_PROPOSAL)
    try:
        hub.wait_ready("alice", mine)
        hub.wait_ready("bob", his)
        moved = pva_from(alice, "alice", mine)
        assert moved.get("put") == "ok", moved
        assert abs(moved["moved"] - moved["target"]) < 1e-3, moved
        assert moved["env"] and moved["env"].startswith("127.0.0.1:"), moved

        refused = pva_from(bob, "bob", his)
        assert "rbv" in refused, refused  # bob reads ...
        assert refused["put"] != "ok", refused  # ... and may not write

        for client, owner, server in ((alice, "alice", mine), (bob, "bob", his)):
            seen = json.loads(run_code(client, owner, server, DIRECT.format(ports=ioc_ports(hub))).strip())
            assert all(v != "connected" for v in seen.values()), (owner, seen, listeners(ioc_ports(hub).values()))
    finally:
        hub.delete_server("alice", mine)
        hub.delete_server("bob", his)
