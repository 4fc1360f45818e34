"""Real sandboxes, real bridges: an instance reaches the instrument gateway only through its own
route, seen there from its own 127.77.x.y address, and nothing else on the host (issue 18, part 3).

The backend is driven directly (no hub): each sandbox runs a small probe instead of Jupyter. The
probe tries every path from inside, writes what happened into its home, then listens on the
"Jupyter" port, so `create` returns once the results exist. A small asyncio TCP server stands in
for the gateway and answers each connection with the peer address it sees.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import shutil
import socket
import textwrap
import uuid
from pathlib import Path

import pytest

from tests.hubtools import make_state_dir
from tests.support import free_port
from visa_spawner.backends.base import BackendError, InstanceSpec, Plan
from visa_spawner.backends.instrument_net import INSTRUMENT_NETWORK, PVA_PORT
from visa_spawner.backends.sandbox.backend import SandboxBackend

pytestmark = [pytest.mark.root, pytest.mark.asyncio(loop_scope="session")]  # the fixtures' loop serves the stand-ins

PLAN = Plan(id="sandbox-probe", display_name="probe", backend="sandbox", cpus=1, memory_mb=512)

# runs inside the sandbox as the instance's account: argv = json of the probes, then Jupyter's port
PROBE = textwrap.dedent("""
    import json, os, socket, sys
    probes, port = json.loads(sys.argv[1]), int(sys.argv[2])

    def tcp(port, send=b""):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                if not send:
                    return "connected"
                s.sendall(send)
                return "answer:" + s.recv(200).decode().strip()
        except OSError as e:
            return "failed:" + type(e).__name__

    def udp(port):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.sendto(b"search D11:DET:Z.RBV", ("127.0.0.1", port))
                return "sent"
            except OSError as e:
                return "failed:" + type(e).__name__

    out = {"env": {k: v for k, v in os.environ.items() if k.startswith(("EPICS_", "VISA_INSTRUMENT"))}}
    for name, (kind, target) in probes.items():
        out[name] = udp(target) if kind == "udp" else tcp(target, b"hello\\n" if kind == "gateway" else b"")
    path = os.path.join(os.environ["HOME"], "probe.json")
    with open(path + ".tmp", "w") as f:
        json.dump(out, f)
    os.replace(path + ".tmp", path)
    server = socket.create_server(("127.0.0.1", port))
    while True:
        server.accept()[0].close()
""")


class GatewayStandIn:
    """Answers every connection with the peer address it sees (what the real gateway decides on)."""

    def __init__(self) -> None:
        self.peers: list[str] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[0]
        self.peers.append(peer)
        await reader.readline()
        writer.write(f"{peer}\n".encode())
        await writer.drain()
        writer.close()


@pytest.fixture
async def host_services():
    """On the host's 127.0.0.1: the gateway stand-in, an IOC's CA TCP and UDP ports, a hub-internal
    port that no route names, and the "hub API" a route does name (proves the probe works)."""
    gateway = GatewayStandIn()
    servers = [await asyncio.start_server(gateway.handle, "127.0.0.1", 0)]

    async def accept_and_close(reader, writer):
        writer.close()

    for _ in range(3):  # IOC CA (5064 style), hub-internal (proxy API style), hub API
        servers.append(await asyncio.start_server(accept_and_close, "127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    yield {"gateway": gateway, "gateway_port": ports[0], "ioc_tcp": ports[1], "internal": ports[2],
           "hub_api": ports[3], "ioc_udp": udp}
    udp.close()
    for s in servers:
        s.close()


@pytest.fixture
def backend():
    state_dir = make_state_dir()
    made = SandboxBackend(state_dir=str(state_dir))
    yield made
    shutil.rmtree(state_dir, ignore_errors=True)


def spec_for(owner: str, port: int, probes: dict, hub_api: int) -> InstanceSpec:
    return InstanceSpec(
        owner=owner, server_name="instr", instance_id=f"{owner}/instr", display_name="instr", proposal="",
        plan=PLAN, command=("python", "-c", PROBE, json.dumps(probes), str(port)), port=port,
        env={"JUPYTERHUB_API_URL": f"http://127.0.0.1:{hub_api}/hub/api"},
    )


def addresses_of(states: list[dict]) -> set[str]:
    return {s["instrument_address"] for s in states}


async def start(backend: SandboxBackend, owner: str, probes: dict, hub_api: int) -> tuple[dict, dict]:
    port = free_port()
    state = await backend.create(spec_for(owner, port, probes, hub_api), lambda *_: None)
    account = state["account"]
    result = json.loads((Path(backend.state_dir) / "homes" / account / "probe.json").read_text())
    return state, result


async def test_only_the_gateway_route_leads_out_and_the_gateway_sees_each_instance_address(backend, host_services):
    h = host_services
    backend.instrument_gateway = f"127.0.0.1:{h['gateway_port']}"
    owners = [f"ir-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    states = []
    try:
        # inside, the route listens on the gateway's own port (a PVA search reply names that port)
        first, first_result = await start(backend, owners[0], {"gateway": ("gateway", h["gateway_port"])},
                                          h["hub_api"])
        states.append(first)
        probes = {
            "gateway": ("gateway", h["gateway_port"]),
            "ioc_tcp": ("tcp", h["ioc_tcp"]),
            "ioc_udp": ("udp", h["ioc_udp"].getsockname()[1]),
            "internal": ("tcp", h["internal"]),
            "other_jupyter": ("tcp", first["port"]),
            "hub_api": ("tcp", h["hub_api"]),
        }
        # the first instance's Jupyter port answers on the host: refused inside is the namespace's doing
        with socket.create_connection(("127.0.0.1", first["port"]), timeout=5):
            pass
        second, result = await start(backend, owners[1], probes, h["hub_api"])
        states.append(second)
        # a restarted hub (a new backend object) learns the running sandboxes' addresses when it polls them
        restarted = SandboxBackend(state_dir=backend.state_dir, instrument_gateway=backend.instrument_gateway)
        assert restarted.addresses.holder(first["instrument_address"]) is None
        assert (await restarted.status(first)).value == "running"
        assert restarted.addresses.holder(first["instrument_address"]) == first["account"]
        assert restarted.addresses.claim("visa-newcomer", saved=first["instrument_address"]) not in addresses_of(states)
    finally:
        for state in states:
            await backend.delete(state)

    addresses = [s["instrument_address"] for s in states]
    assert all(ipaddress.IPv4Address(a) in INSTRUMENT_NETWORK for a in addresses), addresses
    assert addresses[0] != addresses[1]
    # the gateway saw each instance from its own address, which the instance learned from the gateway only
    assert first_result["gateway"] == f"answer:{addresses[0]}"
    assert result["gateway"] == f"answer:{addresses[1]}"
    assert h["gateway"].peers == addresses
    assert result["hub_api"] == "connected"
    for name in ("ioc_tcp", "internal", "other_jupyter"):
        assert result[name].startswith("failed:"), (name, result[name])
    # a UDP search sent inside went nowhere: the gateway connection came after it, and loopback
    # delivery is synchronous, so a datagram that had crossed would be queued by now
    assert result["ioc_udp"].startswith(("sent", "failed:"))
    with pytest.raises(BlockingIOError):
        h["ioc_udp"].recv(100)
    assert result["env"] == {
        "EPICS_PVA_NAME_SERVERS": f"127.0.0.1:{h['gateway_port']}", "EPICS_PVA_AUTO_ADDR_LIST": "NO",
        "EPICS_PVA_ADDR_LIST": "", "EPICS_CA_AUTO_ADDR_LIST": "NO", "EPICS_CA_ADDR_LIST": "",
        "VISA_INSTRUMENT_GATEWAY": f"127.0.0.1:{h['gateway_port']}",
    }
    # stopped instances give their addresses back
    assert backend.addresses.holder(addresses[0]) is None and backend.addresses.holder(addresses[1]) is None


async def test_without_a_gateway_there_is_no_route_and_no_address(backend, host_services):
    h = host_services
    state, result = await start(backend, f"ir-{uuid.uuid4().hex[:8]}", {"gateway": ("gateway", PVA_PORT)},
                                h["hub_api"])
    await backend.delete(state)
    assert state["instrument_address"] == ""
    assert result["gateway"].startswith("failed:") and result["env"] == {}
    assert h["gateway"].peers == []


async def test_a_gateway_off_the_loopback_is_a_clear_error_before_anything_starts(backend):
    backend.instrument_gateway = "192.0.2.10:5075"
    with pytest.raises(BackendError) as e:
        await backend.create(spec_for("ir-nobody", free_port(), {}, free_port()), lambda *_: None)
    assert e.value.reason == "network" and "loopback" in e.value.log_detail
    assert not (Path(backend.state_dir) / "homes").exists()
