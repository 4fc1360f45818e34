"""Just enough RFB over the desktop websocket for the tests (instance side and through a hub)."""
from __future__ import annotations

import hashlib
import struct
import time


class Closed(Exception):
    """The server closed the websocket."""


class RfbClient:
    """Just enough RFB 3.8 to handshake, read raw framebuffer updates and send input."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.buf = b""
        self.cut_texts: list[bytes] = []  # ServerCutText payloads, in order
        version = self._read(12)
        assert version == b"RFB 003.008\n", version
        self.ws.send_binary(b"RFB 003.008\n")
        types = self._read(self._read(1)[0])
        assert 1 in types
        self.ws.send_binary(b"\x01")
        assert struct.unpack(">I", self._read(4))[0] == 0
        self.ws.send_binary(b"\x01")  # shared
        self.width, self.height = struct.unpack(">HH", self._read(4))
        pf = self._read(16)
        self.bpp = pf[0] // 8
        self.name = self._read(struct.unpack(">I", self._read(4))[0]).decode("utf8", "replace")
        self.fb = bytearray(self.width * self.height * self.bpp)
        # SetEncodings: raw, and DesktopSize (Xvnc closes a client without it when a desktop page
        # fitting its window resizes the screen)
        self.ws.send_binary(struct.pack(">BxHii", 2, 2, 0, -223))

    def _read(self, n: int) -> bytes:
        import websocket

        while len(self.buf) < n:
            try:
                frame = self.ws.recv()
            except websocket.WebSocketConnectionClosedException:
                raise Closed() from None
            if not frame:
                raise Closed()
            self.buf += frame if isinstance(frame, bytes) else frame.encode()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def request(self, incremental: bool = False) -> None:
        self.ws.send_binary(struct.pack(">BBHHHH", 3, int(incremental), 0, 0, self.width, self.height))

    def read_update(self) -> None:
        """Read server messages until one framebuffer update has been applied."""
        while True:
            kind = self._read(1)[0]
            if kind == 0:
                _pad, count = struct.unpack(">BH", self._read(3))
                for _ in range(count):
                    x, y, w, h, enc = struct.unpack(">HHHHi", self._read(12))
                    if enc == -223:  # DesktopSize: the screen is now w × h
                        self.width, self.height, self.fb = w, h, bytearray(w * h * self.bpp)
                        continue
                    assert enc == 0, f"unexpected encoding {enc}"
                    data = self._read(w * h * self.bpp)
                    row = w * self.bpp
                    for j in range(h):
                        start = ((y + j) * self.width + x) * self.bpp
                        self.fb[start:start + row] = data[j * row:(j + 1) * row]
                return
            if kind == 1:  # colour map entries
                _pad, _first, n = struct.unpack(">BHH", self._read(5))
                self._read(6 * n)
            elif kind == 2:  # bell
                continue
            elif kind == 3:  # server cut text (negative length: extended clipboard)
                self._read(3)
                self.cut_texts.append(self._read(abs(struct.unpack(">i", self._read(4))[0])))
            else:
                raise AssertionError(f"unexpected server message {kind}")

    def screen(self) -> str:
        """A fresh full frame's hash (also a barrier: everything sent before was processed)."""
        self.request(incremental=False)
        self.read_update()
        return hashlib.sha256(self.fb).hexdigest()

    def settled(self, quiet: float = 0.5, timeout: float = 20) -> str:
        """The screen's hash once it has not changed for `quiet` seconds: a desktop reported ready
        may still be drawing its panel and file manager, and a change from that is no reply to input."""
        deadline = time.monotonic() + timeout
        last, since = self.screen(), time.monotonic()
        while time.monotonic() - since < quiet:
            assert time.monotonic() < deadline, f"the screen kept changing for {timeout:g} s"
            time.sleep(0.1)
            now = self.screen()
            if now != last:
                last, since = now, time.monotonic()
        return last

    def save_png(self, path) -> None:
        """The current framebuffer as a PNG (32 bpp little-endian BGRX, TigerVNC's default)."""
        import zlib

        rows = bytearray()
        stride = self.width * self.bpp
        for y in range(self.height):
            row = self.fb[y * stride:(y + 1) * stride]
            rows.append(0)
            for i in range(0, len(row), self.bpp):
                rows += bytes((row[i + 2], row[i + 1], row[i]))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0))
        png += chunk(b"IDAT", zlib.compress(bytes(rows), 6)) + chunk(b"IEND", b"")
        with open(path, "wb") as f:
            f.write(png)

    def key(self, keysym: int, down: bool) -> None:
        self.ws.send_binary(struct.pack(">BBxxI", 4, int(down), keysym))

    def type(self, text: str) -> None:
        for ch in text:
            sym = 0xFF0D if ch == "\n" else ord(ch)
            self.key(sym, True)
            self.key(sym, False)

    def click(self, x: int, y: int) -> None:
        self.ws.send_binary(struct.pack(">BBHH", 5, 1, x, y))
        self.ws.send_binary(struct.pack(">BBHH", 5, 0, x, y))

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass


def wait_closed(client: RfbClient, timeout: float = 15) -> None:
    """Read until the server closes the connection."""
    deadline = time.monotonic() + timeout
    client.ws.settimeout(timeout)
    while time.monotonic() < deadline:
        try:
            client.request(incremental=True)
            client.read_update()
        except Closed:
            return
        except OSError:
            return
    raise AssertionError("the desktop connection stayed open")
