"""An instance's network identity towards the instrument gateway (issue 18, part 3).

The gateway decides who may write a PV from the *source address* of a connection only (a PVA
or CA client claims any user name it likes). The local backends therefore give each instance
an address it cannot choose: a loopback address `127.77.x.y`, allocated here, which the
hub-side end of the instance's only route to the gateway binds before it connects (the
sandbox's bridge, the VM's per-connection relay). Inside the instance nothing else leads to
the gateway or to an IOC.

Pure helpers plus `AddressBook`, the small in-memory allocator a backend keeps (addresses of
live instances are seeded back from their saved states after a hub restart).
"""
from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable

#: the loopback block instance identities come from (the gateway maps 127.77.x.y → instance)
INSTRUMENT_NETWORK = ipaddress.IPv4Network("127.77.0.0/16")
#: PVAccess' default TCP port (the gateway's own port may differ: see `gateway_port`)
PVA_PORT = 5075


def parse_gateway(text: str) -> tuple[str, int]:
    """`host:port` → (host, port); ValueError with a readable message otherwise."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"instrument gateway {text!r} is not HOST:PORT")
    return host, int(port)


def gateway_port(text: str) -> int:
    """The port the route listens on inside an instance: the gateway's own. A PVA server answers a
    TCP search with its own bound port and the client then connects to the name server's address
    on that port (pvxs `ServerConn::handle_SEARCH`, `procSearchReply`), so a route that changed
    the port number would lose every channel after the search (docs/instrument.md)."""
    return parse_gateway(text)[1]


def local_gateway(text: str) -> tuple[str, int]:
    """The gateway as the local backends need it: on this host's loopback, because the route's
    host side binds a 127.77.x.y source address, which can only reach loopback addresses."""
    host, port = parse_gateway(text)
    if host == "localhost":
        host = "127.0.0.1"
    try:
        loopback = ipaddress.IPv4Address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback or ipaddress.IPv4Address(host) in INSTRUMENT_NETWORK:
        raise ValueError(f"instrument gateway {text!r}: sandbox and qemu instances reach it from a "
                         f"{INSTRUMENT_NETWORK} source address, so it must listen on 127.0.0.1 (or another "
                         "loopback address outside that block)")
    return host, port


def instrument_env(name_server: str) -> dict[str, str]:
    """The variables that point PVA clients inside the instance at the gateway route only: no
    UDP search or broadcast (nothing would answer it), one TCP name server."""
    return {
        "EPICS_PVA_NAME_SERVERS": name_server,
        "EPICS_PVA_AUTO_ADDR_LIST": "NO",
        "EPICS_PVA_ADDR_LIST": "",
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CA_ADDR_LIST": "",
        "VISA_INSTRUMENT_GATEWAY": name_server,
    }


def _usable(address: ipaddress.IPv4Address) -> bool:
    last = int(address) & 0xFF
    return last not in (0, 255)  # x.0 / x.255 read like network or broadcast addresses to people


def preferred_address(key: str) -> str:
    """The address `key` (an instance's stable name) gets when nobody holds it: the same across
    stops and starts, so logs and audits keep naming an instance by one address."""
    size = INSTRUMENT_NETWORK.num_addresses
    offset = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % size
    return str(INSTRUMENT_NETWORK[offset])


def allocate_address(key: str, taken: Iterable[str]) -> str:
    """`key`'s preferred address, or the next free one after it (wrapping); RuntimeError when
    the block is full."""
    busy = set(taken)
    start = int(ipaddress.IPv4Address(preferred_address(key)))
    base, size = int(INSTRUMENT_NETWORK.network_address), INSTRUMENT_NETWORK.num_addresses
    for step in range(size):
        candidate = ipaddress.IPv4Address(base + (start - base + step) % size)
        if _usable(candidate) and str(candidate) not in busy:
            return str(candidate)
    raise RuntimeError(f"no free instance address left in {INSTRUMENT_NETWORK}")


class AddressBook:
    """Which instance holds which 127.77.x.y address, in this hub process.

    `claim` at create (and for each live instance found after a restart, with its saved
    address), `release` at stop: an address is unique among live instances.
    """

    def __init__(self) -> None:
        self._by_key: dict[str, str] = {}

    def claim(self, key: str, saved: str = "", also_taken: Iterable[str] = ()) -> str:
        """`saved` if given and free (a restarted hub keeps each instance's address), else an
        allocated one; addresses in `also_taken` (other instances' saved states) are avoided."""
        others = {a for k, a in self._by_key.items() if k != key} | set(also_taken)
        if saved and saved not in others:
            if ipaddress.IPv4Address(saved) not in INSTRUMENT_NETWORK:
                raise ValueError(f"saved instance address {saved!r} is outside {INSTRUMENT_NETWORK}")
            address = saved
        elif key in self._by_key and self._by_key[key] not in others:
            address = self._by_key[key]
        else:
            address = allocate_address(key, others)
        self._by_key[key] = address
        return address

    def release(self, key: str) -> None:
        self._by_key.pop(key, None)

    def holder(self, address: str) -> str | None:
        return next((k for k, a in self._by_key.items() if a == address), None)
