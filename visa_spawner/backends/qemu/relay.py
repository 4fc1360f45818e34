"""One guest connection to the hub: QEMU's `guestfwd=...-cmd:` runs this per connection with the
guest's socket as stdin/stdout; it pumps bytes to 127.0.0.1:<port> and back (stdlib only, used
when socat is not installed).

A `guestfwd` to a chardev would carry every guest connection over one host connection, which
breaks HTTP as soon as two requests overlap; a command per connection does not.
"""
from __future__ import annotations

import selectors
import socket
import sys


def relay(port: int) -> None:
    guest = socket.socket(fileno=0)
    hub = socket.create_connection(("127.0.0.1", port), timeout=10)
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


if __name__ == "__main__":
    relay(int(sys.argv[1]))
