"""One guest connection to the hub: QEMU's `guestfwd=...-cmd:` runs this per connection with the
guest's socket as stdin/stdout; it pumps bytes to <host>:<port> (127.0.0.1 by default) and back
(stdlib only, used when socat is not installed). `--bind` sets the source address of the host-side
connection: the instance's 127.77.x.y identity at the instrument gateway.

A `guestfwd` to a chardev would carry every guest connection over one host connection, which
breaks HTTP as soon as two requests overlap; a command per connection does not.
"""
from __future__ import annotations

import argparse
import selectors
import socket


def relay(port: int, host: str = "127.0.0.1", bind: str = "") -> None:
    guest = socket.socket(fileno=0)
    hub = socket.create_connection((host, port), timeout=10, source_address=(bind, 0) if bind else None)
    hub.settimeout(None)
    sel = selectors.DefaultSelector()
    sel.register(guest, selectors.EVENT_READ, hub)
    sel.register(hub, selectors.EVENT_READ, guest)
    open_ends = 2
    while open_ends:
        for key, _ in sel.select():
            src, dst = key.fileobj, key.data
            data = src.recv(65536)
            if data:
                dst.sendall(data)
                continue
            sel.unregister(src)
            open_ends -= 1
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                return


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="relay one guest connection (stdin) to a host port")
    p.add_argument("port", type=int)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--bind", default="", help="source address of the host-side connection")
    args = p.parse_args(argv)
    relay(args.port, args.host, args.bind)


if __name__ == "__main__":
    main()
