"""A sandbox's own network: what it may reach of the host, and the bridge process that does it.

Every sandbox runs in a private network namespace (`bwrap --unshare-all`, net included): a web
app a scientist starts on 127.0.0.1 is theirs alone, `/proc/net/tcp` shows only their sockets,
and no host port (other instances, the hub's internal ports, PostgreSQL, ...) is reachable.
`bridge.py` is the only way through, in two directions:

* the hub and the proxy reach Jupyter on host 127.0.0.1:<port>, as before;
* the instance reaches the hub addresses its environment names (`JUPYTERHUB_API_URL`,
  `JUPYTERHUB_ACTIVITY_URL`, `VISA_COLLAB_URL`), each on 127.0.0.1 at the same port inside,
  and, when the backend has an instrument gateway, the gateway on 127.0.0.1:<the gateway's port> inside, its
  host-side socket bound to the instance's own 127.77.x.y address (`instrument_net.py`); nothing
  else.

The planning here is pure (table-tested); `BridgePipes` only makes the pipes that tie
bubblewrap, the bridge and the hub together.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit, urlunsplit

from visa_spawner.backends.instrument_net import local_gateway

BRIDGE_SCRIPT = str(Path(__file__).with_name("bridge.py"))
LOOPBACK = "127.0.0.1"
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class HubRoute:
    """127.0.0.1:`port` inside the sandbox leads to `host`:`target_port` on the host, from the
    host address `source` when set (the instance's identity for the instrument gateway)."""

    port: int
    host: str
    target_port: int
    source: str = ""

    def arg(self) -> str:
        return f"{self.port}={self.host}:{self.target_port}" + (f"@{self.source}" if self.source else "")


def gateway_route(gateway: str, source: str, routes: Sequence[HubRoute], *, jupyter_port: int) -> HubRoute:
    """The route to the instrument gateway (`host:port` on the host's loopback) from `source`,
    inside on the gateway's own port (`instrument_net.gateway_port`); ValueError when that port
    is taken by Jupyter or a hub route."""
    host, port = local_gateway(gateway)
    if port == jupyter_port or any(r.port == port for r in routes):
        raise ValueError(f"port {port} inside the sandbox is needed for the instrument gateway "
                         "but taken by Jupyter or a hub URL")
    return HubRoute(port=port, host=host, target_port=port, source=source)


def hub_routes(
    env: Mapping[str, str], names: Sequence[str], *, jupyter_port: int
) -> tuple[dict[str, str], tuple[HubRoute, ...]]:
    """The environment the sandbox gets and the routes it needs, from the hub's URLs.

    Each variable in `names` that holds an http(s) URL becomes a route; its host is rewritten
    to 127.0.0.1 (inside, the route listens there, on the same port), so a hub bound to a
    name or another address still works. Raises ValueError when two URLs need the same inside
    port for different hosts, or one needs Jupyter's own port.
    """
    out = dict(env)
    routes: dict[int, HubRoute] = {}
    for name in names:
        value = env.get(name)
        if not value:
            continue
        url = urlsplit(value)
        if url.scheme not in DEFAULT_PORTS or not url.hostname:
            raise ValueError(f"{name} is not an http(s) URL with a host: {value!r}")
        port = url.port or DEFAULT_PORTS[url.scheme]
        new = HubRoute(port=port, host=url.hostname, target_port=port)
        if port == jupyter_port:
            raise ValueError(f"{name} uses port {port}, which is the instance's own Jupyter port")
        if routes.setdefault(port, new) != new:
            raise ValueError(f"{name} needs port {port} inside the sandbox for {url.hostname}, "
                             f"already routed to {routes[port].host}")
        if url.hostname != LOOPBACK:
            out[name] = urlunsplit(url._replace(netloc=f"{LOOPBACK}:{port}"))
    return out, tuple(routes[p] for p in sorted(routes))


def bridge_argv(
    *, info_fd: int, block_fd: int, jupyter_port: int, routes: Sequence[HubRoute], uid: int, gid: int,
    ready_fd: int | None = None, python: str = sys.executable, script: str = BRIDGE_SCRIPT,
) -> list[str]:
    """The bridge's command line (`python -I`: no environment, user site or cwd imports)."""
    argv = [python, "-I", script, f"--info-fd={info_fd}", f"--block-fd={block_fd}",
            f"--publish={jupyter_port}", f"--uid={uid}", f"--gid={gid}"]
    if ready_fd is not None:
        argv.append(f"--ready-fd={ready_fd}")
    return argv + [f"--route={r.arg()}" for r in routes]


class BridgePipes:
    """bwrap writes its pid to `info` and waits on `block`; the bridge reads one, writes the other,
    and writes one byte to `ready` once Jupyter is published (end of file: the bridge ended).

    Use as a context manager around starting both processes: it closes the hub's copies, so
    each pipe ends when its last real holder does (bwrap exiting, the bridge exiting), except the
    read end of `ready` once `take_ready` gave it to the hub.
    """

    def __init__(self) -> None:
        self.info_r, self.info_w = os.pipe()
        self.block_r, self.block_w = os.pipe()
        self.ready_r, self.ready_w = os.pipe()
        self._ready_taken = False

    def take_ready(self) -> int:
        """The read end of `ready`, now the caller's to close."""
        self._ready_taken = True
        return self.ready_r

    @property
    def sandbox_fds(self) -> tuple[int, int]:
        return (self.info_w, self.block_r)

    @property
    def bridge_fds(self) -> tuple[int, int, int]:
        return (self.info_r, self.block_w, self.ready_w)

    def close(self) -> None:
        kept = (self.ready_r,) if self._ready_taken else ()
        for fd in {self.info_r, self.info_w, self.block_r, self.block_w, self.ready_r, self.ready_w} - set(kept):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
