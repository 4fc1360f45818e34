"""A VM's route to the instrument gateway: one more guestfwd whose per-connection relay binds the
VM's own 127.77.x.y address (issue 18, part 3). The argv is pure (fast); the relays and QEMU's
parsing of the escaped comma are checked with the real programs."""
from __future__ import annotations

import asyncio
import ipaddress
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.spawner.qemu.test_qemu_builders import layout, opt
from tests.support import free_port
from visa_spawner.backends.base import InstanceSpec, Plan
from visa_spawner.backends.instrument_net import INSTRUMENT_NETWORK
from visa_spawner.backends.qemu import relay as qemu_relay
from visa_spawner.backends.qemu.backend import QemuBackend
from visa_spawner.backends.qemu.command import gateway_relay_argv, gateway_relay_command, netdev_arg, qemu_argv

SOCAT_TEMPLATE = gateway_relay_command("/usr/bin/socat", "/py", "/relay.py")
PYTHON_TEMPLATE = gateway_relay_command(None, sys.executable, qemu_relay.__file__)


def test_gateway_relay_templates():
    assert SOCAT_TEMPLATE == ("/usr/bin/socat", "STDIO", "TCP:{host}:{port},bind={source}")
    assert gateway_relay_command(None, "/py", "/relay.py") == (
        "/py", "/relay.py", "{port}", "--host={host}", "--bind={source}")
    assert gateway_relay_argv(SOCAT_TEMPLATE, "localhost:15075", "127.77.1.2") == (
        "/usr/bin/socat", "STDIO", "TCP:127.0.0.1:15075,bind=127.77.1.2")


@pytest.mark.parametrize("gateway", ["10.1.2.3:5075", "gw.example:5075", "127.77.3.3:5075"])
def test_gateway_relay_refuses_a_gateway_a_127_77_source_cannot_reach(gateway):
    with pytest.raises(ValueError, match="loopback"):
        gateway_relay_argv(SOCAT_TEMPLATE, gateway, "127.77.1.2")


def test_netdev_has_one_more_guestfwd_with_qemus_comma_escape():
    relay = gateway_relay_argv(SOCAT_TEMPLATE, "127.0.0.1:15075", "127.77.1.2")
    (net,) = opt(qemu_argv("q", layout(gateway_relay=relay, gateway_port=15075)), "-netdev")
    assert net == ("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:41234-:8888,"
                   "guestfwd=tcp:10.0.2.100:8081-cmd:/usr/bin/socat STDIO TCP:127.0.0.1:8081,"
                   "guestfwd=tcp:10.0.2.101:15075-cmd:/usr/bin/socat STDIO TCP:127.0.0.1:15075,,bind=127.77.1.2")
    # the guest's end keeps the gateway's port number: a PVA search reply names it
    assert "10.0.2.101" not in netdev_arg(layout())  # no gateway configured: no way to it


def test_backend_puts_the_gateway_in_the_guest_env_and_the_relay_in_the_layout(tmp_path):
    backend = QemuBackend(state_dir=str(tmp_path), instrument_gateway="127.0.0.1:15075",
                          gateway_relay=list(SOCAT_TEMPLATE))
    spec = InstanceSpec(owner="alice", server_name="vm", instance_id="alice/vm", display_name="vm", proposal="",
                        plan=Plan(id="vm", display_name="vm", backend="qemu", cpus=1, memory_mb=1024),
                        command=("jupyterhub-singleuser",), port=41234,
                        env={"JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api"})
    address = backend.addresses.claim("vm-x")
    env = backend._instance_config(spec, "vm-x", address)["env"]
    assert env["EPICS_PVA_NAME_SERVERS"] == env["VISA_INSTRUMENT_GATEWAY"] == "10.0.2.101:15075"
    assert env["EPICS_PVA_AUTO_ADDR_LIST"] == env["EPICS_CA_AUTO_ADDR_LIST"] == "NO"
    assert env["EPICS_PVA_ADDR_LIST"] == env["EPICS_CA_ADDR_LIST"] == ""
    assert "EPICS_PVA_NAME_SERVERS" not in backend._instance_config(spec, "vm-x")["env"]


def test_backend_keeps_running_vms_addresses_after_a_restart(tmp_path):
    backend = QemuBackend(state_dir=str(tmp_path), instrument_gateway="127.0.0.1:15075")
    held = backend.addresses.claim("vm-a")
    # a VM found running after a restart (its saved state) keeps its address; a new one avoids it
    assert backend.addresses.claim("vm-b", also_taken=[held]) != held
    backend.addresses.release("vm-a")
    assert backend.addresses.holder(held) is None


# -- the real relays: what QEMU runs per guest connection ---------------------------------------

async def relay_once(command_for: Callable[[int], str]) -> tuple[str, bytes]:
    """Run the command for the stand-in's port as QEMU does (`/bin/sh -c`, the guest's socket on stdin/stdout) against a
    gateway stand-in; return the peer address the stand-in saw and what came back."""
    seen: list[str] = []

    async def answer(reader, writer):
        seen.append(writer.get_extra_info("peername")[0])
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    guest, qemu_end = socket.socketpair()
    guest.setblocking(False)
    proc = await asyncio.create_subprocess_exec("/bin/sh", "-c", command_for(port),
                                                stdin=qemu_end, stdout=qemu_end)
    qemu_end.close()
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(guest, b"hello gateway\n")
        reply = await asyncio.wait_for(loop.sock_recv(guest, 100), 10)
    finally:
        guest.close()
        await asyncio.wait_for(proc.wait(), 10)
        server.close()
    return seen[0], reply


@pytest.mark.root
@pytest.mark.parametrize("template", [SOCAT_TEMPLATE, PYTHON_TEMPLATE], ids=["socat", "python"])
async def test_the_relay_binds_the_vms_address_before_connecting(template):
    assert shutil.which(template[0])
    source = "127.77.200.7"

    def command_for(port: int) -> str:
        """The command string as QEMU's option parser hands it to /bin/sh (",," unescaped to ",")."""
        relay = gateway_relay_argv(template, f"127.0.0.1:{port}", source)
        (net,) = opt(qemu_argv("q", layout(gateway_relay=relay, gateway_port=port)), "-netdev")
        return net.split(f"guestfwd=tcp:10.0.2.101:{port}-cmd:", 1)[1].replace(",,", ",")

    peer, reply = await relay_once(command_for)
    assert peer == source and ipaddress.IPv4Address(peer) in INSTRUMENT_NETWORK
    assert reply == b"hello gateway\n"


@pytest.mark.qemu
def test_qemu_accepts_the_escaped_relay_and_refuses_it_unescaped():
    port = free_port()
    relay = gateway_relay_argv(SOCAT_TEMPLATE, f"127.0.0.1:{port}", "127.77.1.2")
    (net,) = opt(qemu_argv("q", layout(gateway_relay=relay, gateway_port=port)), "-netdev")
    net = net.split(",guestfwd=tcp:10.0.2.100", 1)[0] + ",guestfwd=" + net.split(",guestfwd=", 2)[2]

    def run(netdev: str) -> subprocess.CompletedProcess:
        return subprocess.run(["qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
                               "-monitor", "stdio", "-netdev", netdev], input="quit\n", capture_output=True,
                              text=True, timeout=60)

    accepted = run(net)
    assert accepted.returncode == 0, accepted.stderr
    refused = run(net.replace(",,", ","))
    assert refused.returncode != 0 and "Invalid parameter 'bind'" in refused.stderr
