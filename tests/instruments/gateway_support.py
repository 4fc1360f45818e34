"""What the gateway tests share: the real IOC process with its PVA face, the gateway on its own
event loop thread, a fake hub (`FakeHub`), and p4p clients whose connections come from a chosen
source address (`127.77.x.y`) through a tiny TCP relay, as a sandbox's bridge makes them."""
from __future__ import annotations

import asyncio
import getpass
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

from p4p.client.thread import Context

from tests.instruments.conftest import CATALOGUE
from tests.support import free_port, wait_for
from visa_instruments.access import HubSnapshot, InstanceView
from visa_instruments.gateway import InstrumentGateway, tcp_client_conf

IOC = Path(sys.executable).parent / "visa-instrument-ioc"
IN_WINDOW = date(2026, 11, 24)  # E-2026-0110 (P-2026-011, alice and bob) on D11: 21..26 Nov
AFTER_WINDOW = date(2026, 12, 4)  # 8 days after its end: outside the 7-day margin


class FakeHub:
    """The hub's truth as the gateway reads it, changed by the test."""

    def __init__(self) -> None:
        self.instances: dict[str, InstanceView] = {}
        self.groups: dict[str, frozenset[str]] = {}

    def add(self, address: str, owner: str, proposal: str, **members) -> InstanceView:
        self.instances[address] = InstanceView(owner=owner, server="lab", address=address, proposal=proposal,
                                               **members)
        return self.instances[address]

    def change(self, address: str, **fields) -> None:
        self.instances[address] = replace(self.instances[address], **fields)

    async def snapshot(self) -> HubSnapshot:
        return HubSnapshot(instances=dict(self.instances), groups=dict(self.groups))


@dataclass
class Today:
    day: date = IN_WINDOW

    def __call__(self) -> date:
        return self.day


def start_ioc(tmp_path: Path, instrument: str = "D11") -> tuple[subprocess.Popen, int]:
    """The real IOC process, CA and PVA on free ports, the demo's 2026-11-24 (a run may start)."""
    pva = free_port()
    log = open(tmp_path / f"ioc-{instrument}.log", "wb")
    process = subprocess.Popen(
        [str(IOC), "--catalogue", str(CATALOGUE), "--instrument", instrument, "--data-root",
         str(tmp_path / "data"), "--port", str(free_port()), "--repeater-port", str(free_port()),
         "--pva-port", str(pva), "--today", "2026-11-24"],
        stdout=log, stderr=subprocess.STDOUT)
    log.close()
    with Context("pva", conf=tcp_client_conf([f"127.0.0.1:{pva}"]), useenv=False) as direct:
        wait_for(lambda: process.poll() is None and direct.get(f"{instrument}:RUN:STATE", timeout=1) is not None,
                 timeout=30, what=f"the IOC's PVA face (log: {tmp_path}/ioc-{instrument}.log)")
    return process, pva


class GatewayThread:
    """The gateway on its own event loop, as in its process: the test thread stays free to block."""

    def __init__(self, gateway: InstrumentGateway) -> None:
        self.gateway = gateway
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="gateway-loop", daemon=True)

    def run(self, coroutine, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def __enter__(self) -> InstrumentGateway:
        self.thread.start()
        self.run(self.gateway.start())
        return self.gateway

    def __exit__(self, *exc) -> None:
        try:
            self.run(self.gateway.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


class Relay:
    """Listens on `listen` at the gateway's own port and forwards each connection to the gateway
    from `source` (bound before connecting): the gateway sees `source` as the peer, as with a
    sandbox's bridge. Same port as the gateway's because a PVA server's search reply over TCP
    names its own port (with the address of the connection the search came on: pvxs
    `ServerConn::handle_SEARCH`, client `procSearchReply`), so the client's next connection goes
    to <relay address>:<gateway port>."""

    def __init__(self, listen: str, source: str, target: tuple[str, int],
                 rewrite: tuple[bytes, bytes] | None = None, port: int | None = None) -> None:
        self.source, self.target, self.rewrite = source, target, rewrite
        self.listener = socket.create_server((listen, port or target[1]))
        self.address = f"{listen}:{port or target[1]}"
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                inside, _ = self.listener.accept()
            except OSError:
                return
            outside = socket.socket()
            for s in (inside, outside):  # as the sandbox bridge's asyncio streams: no Nagle delay
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            outside.bind((self.source, 0))
            try:
                outside.connect(self.target)
            except OSError:
                inside.close()
                continue
            self.sockets += [inside, outside]
            for a, b, rewrite in ((inside, outside, self.rewrite), (outside, inside, None)):
                threading.Thread(target=self._pump, args=(a, b, rewrite), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, rewrite: tuple[bytes, bytes] | None) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data.replace(*rewrite) if rewrite else data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        for s in self.sockets:
            s.close()


@dataclass
class Clients:
    """p4p clients, each from one source address, that find the gateway over TCP only."""

    gateway_port: int
    relays: list[Relay] = field(default_factory=list)
    contexts: list[Context] = field(default_factory=list)

    def from_address(self, source: str, claim: str | None = None, port: int | None = None) -> Context:
        """`claim`: the user name the client's 'ca' credentials claim (a forgery, rewritten in
        its connection validation by the relay: same length as the real name, a size-prefixed
        PVA string). `port`: the relay's own, when not the gateway's (which loses the channel)."""
        listen = "127.78." + source.split(".", 2)[2]  # a loopback address of its own per client
        rewrite = None
        if claim is not None:
            real = getpass.getuser()
            assert len(real) == len(claim) < 254, f"forging {claim!r} needs a {len(claim)}-letter OS user, not {real!r}"
            rewrite = (bytes([len(real)]) + real.encode(), bytes([len(claim)]) + claim.encode())
        relay = Relay(listen, source, ("127.0.0.1", self.gateway_port), rewrite, port)
        self.relays.append(relay)
        conf = tcp_client_conf([relay.address])
        context = Context("pva", conf=conf, useenv=False)
        self.contexts.append(context)
        return context

    def close(self) -> None:
        for c in self.contexts:
            c.close()
        for r in self.relays:
            r.close()
