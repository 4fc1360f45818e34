"""The network bridge of one sandbox: the only way in and out of its private network namespace.

Each sandbox has its own network namespace (bubblewrap `--unshare-net`): its own loopback,
nothing of the host's ports, other sandboxes' ports or abstract unix sockets. This process,
started by the hub next to the sandbox (in the sandbox's cgroup, so stop kills it too), holds
sockets in both namespaces; a socket stays in the namespace it was created in, so no unix
socket file or in-sandbox helper is needed:

* **publish**: host 127.0.0.1:<port> → the sandbox's 127.0.0.1:<port> (Jupyter), so the hub and
  the proxy reach Jupyter where they always did;
* **routes**: the sandbox's 127.0.0.1:<p> → one hub address on the host (the hub API, the
  collaboration service, the instrument gateway): the only host ports an instance can reach.
  A route may name a source address (`@127.77.x.y`): its host-side sockets bind it before
  connecting, so the instrument gateway knows the instance by where the connection comes from.

Start-up, driven by bubblewrap's own pipes: read the sandbox's pid from `--info-fd`, enter its
network namespace in one worker thread, open the route listeners there, then release the
sandbox from `--block-fd` (so they exist before Jupyter first calls the hub), and drop root
for the instance's own uid. The host port is bound at once (reserved) but listens only once
Jupyter accepts inside, so "the port answers" still means "Jupyter is up"; the bridge then writes
one byte to `--ready-fd`, so the hub waits on a pipe instead of polling the port. It looks inside
less and less often (20 ms, at most every 0.25 s: a pooled sandbox may wait minutes) and every
10 ms for a few seconds after SIGUSR1, which the hub sends when it adopts a pooled sandbox (its
Jupyter starts now; the sandbox, in its own pid namespace, cannot send it). The bridge exits
when the sandbox does, and ends the sandbox if it fails itself (an unreachable instance is
worse than a stopped one).

Standard library only: it runs as `python -I bridge.py ...` and starts in milliseconds.
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import json
import os
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor

CLONE_NEWNET = 0x40000000
BUFFER = 256 * 1024
LOOPBACK = "127.0.0.1"
HURRY_S, HURRY_DELAY = 5.0, 0.01  # after SIGUSR1: look for Jupyter every 10 ms for 5 s

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def next_delay(delay: float, hurried: bool) -> float:
    """The next pause between looks for Jupyter: `HURRY_DELAY` while hurried, else 1.5x up to 0.25 s."""
    return HURRY_DELAY if hurried else min(delay * 1.5, 0.25)


def log(message: str) -> None:
    print(f"visa-bridge: {message}", file=sys.stderr, flush=True)


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """Move the calling thread into the namespace open at `fd` (Python 3.11 has no os.setns)."""
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def route(text: str) -> tuple[int, str, int, str]:
    """`<inside port>=<host>:<port>[@<source address>]` → (inside port, host, port, source)."""
    inside, _, target = text.partition("=")
    target, _, source = target.partition("@")
    host, _, port = target.rpartition(":")
    if not inside.isdigit() or not port.isdigit() or not host or (source and not source[0].isdigit()):
        raise argparse.ArgumentTypeError(f"bad route {text!r}: expected PORT=HOST:PORT[@SOURCE]")
    return int(inside), host.strip("[]"), int(port), source


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="visa-bridge", description=__doc__.split("\n\n")[0])
    p.add_argument("--info-fd", type=int, required=True, help="read end of bwrap's --info-fd pipe")
    p.add_argument("--block-fd", type=int, required=True, help="write end of bwrap's --block-fd pipe")
    p.add_argument("--publish", type=int, required=True, help="Jupyter's port, on 127.0.0.1 on both sides")
    p.add_argument("--route", type=route, action="append", default=[],
                   help="PORT=HOST:PORT[@SOURCE] (repeatable)")
    p.add_argument("--ready-fd", type=int, help="write end of a pipe: one byte once Jupyter is published")
    p.add_argument("--uid", type=int, required=True, help="uid to run as once the sockets exist")
    p.add_argument("--gid", type=int, required=True, help="gid to run as once the sockets exist")
    return p.parse_args(argv)


def read_sandbox(info_fd: int) -> tuple[int, int | None]:
    """The sandbox's pid and network namespace inode from bwrap's --info-fd JSON."""
    with os.fdopen(info_fd, "rb") as f:
        raw = f.read()
    if not raw:
        raise RuntimeError("the sandbox ended before it started (no --info-fd data)")
    info = json.loads(raw)
    return int(info["child-pid"]), info.get("net-namespace")


def listener(host: str, port: int, *, listen: bool = True) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    if listen:
        s.listen(128)
    s.setblocking(False)
    return s


def drop_privileges(uid: int, gid: int) -> None:
    """Become the instance's account (every thread: glibc applies set*id process-wide)."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(BUFFER):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()


async def splice(a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 b: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    """Copy both ways until both sides are done, half-closes passed on."""
    try:
        await asyncio.gather(_copy(a[0], b[1]), _copy(b[0], a[1]))
    finally:
        for _, w in (a, b):
            w.close()


class Bridge:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loop = asyncio.get_running_loop()
        self.inside: ThreadPoolExecutor | None = None  # its one thread lives in the sandbox's netns
        self.sandbox_pid = 0
        self.servers: list[asyncio.AbstractServer] = []
        self.done = asyncio.Event()
        self.wake = asyncio.Event()  # the sandbox ended, or the hub said Jupyter is starting
        self.hurry_until = 0.0

    def _ended(self) -> None:
        self.done.set()
        self.wake.set()

    def _hurry(self) -> None:
        self.hurry_until = self.loop.time() + HURRY_S
        self.wake.set()

    # -- start-up (root) ------------------------------------------------------------------------
    async def setup(self) -> None:
        a = self.args
        self.loop.add_signal_handler(signal.SIGUSR1, self._hurry)  # before the sandbox may start
        self.sandbox_pid, ns_inode = read_sandbox(a.info_fd)
        ns_fd = os.open(f"/proc/{self.sandbox_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        if ns_inode is not None and os.fstat(ns_fd).st_ino != int(ns_inode):
            raise RuntimeError("the sandbox's pid no longer names its network namespace")
        if os.fstat(ns_fd).st_ino == os.stat("/proc/self/ns/net").st_ino:
            raise RuntimeError("the sandbox shares the host's network namespace (bwrap without --unshare-net)")
        self.pidfd = os.pidfd_open(self.sandbox_pid)
        self.inside = ThreadPoolExecutor(1, thread_name_prefix="inside", initializer=setns, initargs=(ns_fd,))
        route_socks = await self.loop.run_in_executor(
            self.inside, lambda: [listener(LOOPBACK, port) for port, *_ in a.route]
        )
        os.close(ns_fd)
        self.public = listener(LOOPBACK, a.publish, listen=False)  # reserved now, listening once Jupyter is
        os.write(a.block_fd, b"1")  # the routes exist: let the sandbox start Jupyter
        os.close(a.block_fd)
        drop_privileges(a.uid, a.gid)
        for sock, (_, host, port, source) in zip(route_socks, a.route, strict=True):
            self.servers.append(await asyncio.start_server(
                lambda r, w, host=host, port=port, source=source: self._to_host(r, w, host, port, source),
                sock=sock, limit=BUFFER))
        self.loop.add_reader(self.pidfd, self._ended)
        log(f"sandbox pid {self.sandbox_pid}: routes {[p for p, *_ in a.route]} open, waiting for Jupyter")

    # -- connections ----------------------------------------------------------------------------
    async def _inside_socket(self) -> socket.socket:
        s = await self.loop.run_in_executor(self.inside, socket.socket, socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        return s

    async def _connect_inside(self, port: int) -> socket.socket:
        s = await self._inside_socket()
        try:
            await self.loop.sock_connect(s, (LOOPBACK, port))
        except BaseException:
            s.close()
            raise
        return s

    async def _to_host(self, reader, writer, host: str, port: int, source: str = "") -> None:
        try:
            upstream = await asyncio.open_connection(
                host, port, limit=BUFFER, local_addr=(source, 0) if source else None)
        except OSError:
            writer.transport.abort()
            return
        await splice((reader, writer), upstream)

    async def _to_jupyter(self, reader, writer) -> None:
        try:
            sock = await self._connect_inside(self.args.publish)
        except OSError:
            writer.transport.abort()
            return
        await splice((reader, writer), await asyncio.open_connection(sock=sock, limit=BUFFER))

    async def wait_for_jupyter(self) -> None:
        delay = 0.02
        while not self.done.is_set():
            try:
                (await self._connect_inside(self.args.publish)).close()
                break
            except OSError:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), delay)
                except TimeoutError:
                    pass
                delay = next_delay(delay, self.loop.time() < self.hurry_until)
        if self.done.is_set():
            return
        self.public.listen(128)
        self.servers.append(await asyncio.start_server(self._to_jupyter, sock=self.public, limit=BUFFER))
        log(f"Jupyter is up: published on {LOOPBACK}:{self.args.publish}")
        if self.args.ready_fd is not None:
            os.write(self.args.ready_fd, b"1")
            os.close(self.args.ready_fd)

    async def run(self) -> None:
        await self.setup()
        await self.wait_for_jupyter()
        await self.done.wait()
        log("the sandbox ended")
        for server in self.servers:
            server.close()

    def end_sandbox(self) -> None:
        if self.sandbox_pid:
            try:
                os.kill(self.sandbox_pid, signal.SIGKILL)
            except OSError:
                pass


async def main_async(args: argparse.Namespace) -> int:
    bridge = Bridge(args)
    try:
        await bridge.run()
        return 0
    except Exception as e:  # noqa: BLE001 - any failure: say so, end the sandbox, exit 1
        log(f"failed: {type(e).__name__}: {e}")
        bridge.end_sandbox()
        return 1


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
