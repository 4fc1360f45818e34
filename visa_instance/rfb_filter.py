"""Both halves of an RFB (VNC) connection, parsed message by message.

The desktop websocket (:mod:`visa_instance.desktop_socket`) feeds every byte a browser sends
through :class:`ClientStream` before it reaches the VNC server, and every byte the server sends
back through its :class:`ServerStream`. The parser follows the protocol
(RFC 6143 plus the extensions noVNC and TigerVNC speak): the handshake (version, security type,
ClientInit), then one message at a time, however the bytes are split across websocket frames.
Each message is either forwarded whole or dropped whole, so the server never sees a torn
message; for a view-only member the *input* messages (keyboard, pointer, clipboard, screen
resize, power actions) are dropped, and so is the clipboard the server sends them (GUESTs
receive no clipboard). Anything the parser does not know closes the connection: an unknown
message type cannot be skipped safely (its length is unknown), and a peer that sends one is
not one of ours.

The server's replies can only be parsed if their encodings are known: SetEncodings is cut down
to :data:`PARSED_ENCODINGS` on its way (noVNC lists Hextile and TightPNG too, but asks Tight
first, which Xvnc then uses), and a pixel format change once updates flow is refused (the
server's bytes already in flight would be read with the wrong pixel size).

Pure: no I/O, no clock; tested table-driven in ``tests/instance/test_rfb_filter.py`` (``-m fast``).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

# Largest clipboard text accepted from a client (bytes). noVNC sends at most what the user
# pasted; a larger announcement is a protocol abuse and closes the connection.
MAX_CUT_TEXT = 8 * 1024 * 1024
MAX_FENCE_PAYLOAD = 64  # RFB fence payloads are at most 64 bytes

_VERSION = re.compile(rb"^RFB 003\.00[378]\n$")
SECURITY_NONE = 1  # the only type the instance's Xvnc offers (-SecurityTypes None)


class RfbProtocolError(Exception):
    """The client broke the protocol or sent something we do not forward: close it."""


@dataclass(frozen=True)
class Kind:
    """One client message type: its name and whether it acts on the desktop (input)."""

    type: int
    name: str
    input: bool


# Client→server message types we forward (RFC 6143 §7.5 and the extensions in noVNC 1.3).
SET_PIXEL_FORMAT = Kind(0, "SetPixelFormat", False)
SET_ENCODINGS = Kind(2, "SetEncodings", False)
FRAMEBUFFER_UPDATE_REQUEST = Kind(3, "FramebufferUpdateRequest", False)
KEY_EVENT = Kind(4, "KeyEvent", True)
POINTER_EVENT = Kind(5, "PointerEvent", True)
CLIENT_CUT_TEXT = Kind(6, "ClientCutText", True)
ENABLE_CONTINUOUS_UPDATES = Kind(150, "EnableContinuousUpdates", False)
CLIENT_FENCE = Kind(248, "ClientFence", False)
XVP = Kind(250, "xvp", True)  # shutdown/reboot/reset requests
SET_DESKTOP_SIZE = Kind(251, "SetDesktopSize", True)  # resizes the screen everybody shares
QEMU_KEY_EVENT = Kind(255, "QEMUExtendedKeyEvent", True)

KINDS = {k.type: k for k in (
    SET_PIXEL_FORMAT, SET_ENCODINGS, FRAMEBUFFER_UPDATE_REQUEST, KEY_EVENT, POINTER_EVENT,
    CLIENT_CUT_TEXT, ENABLE_CONTINUOUS_UPDATES, CLIENT_FENCE, XVP, SET_DESKTOP_SIZE,
    QEMU_KEY_EVENT,
)}
INPUT_TYPES = frozenset(k.type for k in KINDS.values() if k.input)


def message_length(buf: bytes | bytearray) -> int | None:
    """Length of the client message at the start of ``buf``; None if more bytes are needed.

    Raises :class:`RfbProtocolError` for an unknown type or an unacceptable length field.
    """
    if not buf:
        return None
    kind = KINDS.get(buf[0])
    if kind is None:
        raise RfbProtocolError(f"unknown client message type {buf[0]}")
    n = len(buf)
    if kind is SET_PIXEL_FORMAT:
        return 20
    if kind is FRAMEBUFFER_UPDATE_REQUEST or kind is ENABLE_CONTINUOUS_UPDATES:
        return 10
    if kind is KEY_EVENT:
        return 8
    if kind is POINTER_EVENT:
        return 6
    if kind is XVP:
        return 4
    if kind is SET_ENCODINGS:
        if n < 4:
            return None
        (count,) = struct.unpack_from(">H", buf, 2)
        return 4 + 4 * count
    if kind is CLIENT_CUT_TEXT:
        if n < 8:
            return None
        (length,) = struct.unpack_from(">i", buf, 4)  # negative: extended clipboard
        if abs(length) > MAX_CUT_TEXT:
            raise RfbProtocolError(f"clipboard message of {abs(length)} bytes is too large")
        return 8 + abs(length)
    if kind is CLIENT_FENCE:
        if n < 9:
            return None
        if buf[8] > MAX_FENCE_PAYLOAD:
            raise RfbProtocolError(f"fence payload of {buf[8]} bytes is too large")
        return 9 + buf[8]
    if kind is SET_DESKTOP_SIZE:
        if n < 8:
            return None
        return 8 + 16 * buf[6]
    if kind is QEMU_KEY_EVENT:
        if n < 2:
            return None
        if buf[1] != 0:
            raise RfbProtocolError(f"unknown QEMU client message subtype {buf[1]}")
        return 12
    raise AssertionError(kind)  # pragma: no cover - every kind is handled above


@dataclass
class Fed:
    """What one :meth:`ClientStream.feed` call decided."""

    forward: bytes = b""
    forwarded: list[str] = field(default_factory=list)  # message names, in order
    dropped: list[str] = field(default_factory=list)

    @property
    def input_forwarded(self) -> int:
        return sum(1 for name in self.forwarded if name in _INPUT_NAMES)


_INPUT_NAMES = frozenset(k.name for k in KINDS.values() if k.input)


class ClientStream:
    """Parser state for one connection's client→server bytes.

    ``feed(data, view_only)`` returns the bytes to send on to the server. ``view_only`` is
    asked per message, so a member who becomes view-only (the room was locked) stops
    sending input from the next message on.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.phase = "version"  # version → security → client-init → messages
        self.version: bytes | None = None
        self.updates_requested = False
        self.server = ServerStream(self)  # the other direction, which needs what was agreed here

    def feed(self, data: bytes, view_only: bool | Callable[[], bool] = False) -> Fed:
        self._buf += data
        out = Fed()
        chunks: list[bytes] = []
        while True:
            if self.phase == "version":
                if len(self._buf) < 12:
                    break
                version = bytes(self._buf[:12])
                if not _VERSION.match(version):
                    raise RfbProtocolError(f"unsupported protocol version {version[:11]!r}")
                self.version = version
                chunks.append(self._take(12))
                # RFB 3.3: the server picks the security type, the client sends nothing
                self.phase = "client-init" if version == b"RFB 003.003\n" else "security"
                continue
            if self.phase == "security":
                if not self._buf:
                    break
                if self._buf[0] != SECURITY_NONE:
                    raise RfbProtocolError(f"security type {self._buf[0]} is not offered")
                chunks.append(self._take(1))
                self.phase = "client-init"
                continue
            if self.phase == "client-init":
                if not self._buf:
                    break
                self._take(1)
                chunks.append(b"\x01")  # always shared: nobody may disconnect the others
                self.phase = "messages"
                continue
            length = message_length(self._buf)
            if length is None or len(self._buf) < length:
                break
            kind = KINDS[self._buf[0]]
            message = self._take(length)
            ro = view_only() if callable(view_only) else view_only
            if kind.input and ro:
                out.dropped.append(kind.name)
                continue
            if kind is SET_PIXEL_FORMAT:
                if self.updates_requested:
                    raise RfbProtocolError("SetPixelFormat once updates flow is not supported")
                self.server.client_format = PixelFormat.parse(message[4:20])
            elif kind is SET_ENCODINGS:
                message = parsed_encodings_only(message)
            elif kind is FRAMEBUFFER_UPDATE_REQUEST or kind is ENABLE_CONTINUOUS_UPDATES:
                self.updates_requested = True
            chunks.append(message)
            out.forwarded.append(kind.name)
        out.forward = b"".join(chunks)
        return out

    def _take(self, n: int) -> bytes:
        head = bytes(self._buf[:n])
        del self._buf[:n]
        return head

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message waiting for the rest."""
        return len(self._buf)


# Encodings whose server messages ServerStream can delimit (RFC 6143 §7.7, rfbproto, TigerVNC).
RAW, COPY_RECT, RRE, TIGHT, ZRLE = 0, 1, 2, 7, 16
CURSOR, X_CURSOR, DESKTOP_SIZE, LAST_RECT = -239, -240, -223, -224
QEMU_KEY, DESKTOP_NAME, EXTENDED_DESKTOP_SIZE = -258, -307, -308
VMWARE_CURSOR = 0x574D5664
# pseudo-encodings that only announce support: no rectangle of their own
XVP_SUPPORT, FENCE, CONTINUOUS_UPDATES = -309, -312, -313
EXTENDED_CLIPBOARD = 0xC0A1E5CE - (1 << 32)  # signed, as on the wire
TUNING = frozenset(range(-32, -22)) | frozenset(range(-256, -246))  # JPEG quality, compression level
PARSED_ENCODINGS = frozenset({
    RAW, COPY_RECT, RRE, TIGHT, ZRLE, CURSOR, X_CURSOR, DESKTOP_SIZE, LAST_RECT, QEMU_KEY,
    DESKTOP_NAME, EXTENDED_DESKTOP_SIZE, VMWARE_CURSOR, XVP_SUPPORT, FENCE, CONTINUOUS_UPDATES,
    EXTENDED_CLIPBOARD,
}) | TUNING


def parsed_encodings_only(message: bytes) -> bytes:
    """A SetEncodings message keeping the client's order but only what ServerStream parses."""
    count = struct.unpack_from(">H", message, 2)[0]
    kept = [e for e in struct.unpack_from(f">{count}i", message, 4) if e in PARSED_ENCODINGS]
    return struct.pack(f">BxH{len(kept)}i", 2, len(kept), *kept)


@dataclass(frozen=True)
class PixelFormat:
    """The pixel format in force: Raw, RRE, cursors and Tight are sized by it."""

    bits_per_pixel: int = 32
    depth: int = 24
    true_colour: bool = True
    maxima: tuple[int, int, int] = (255, 255, 255)
    shifts: tuple[int, int, int] = (16, 8, 0)

    @classmethod
    def parse(cls, data: bytes) -> PixelFormat:
        bpp, depth, _big_endian, true_colour, r, g, b, rs, gs, bs = struct.unpack_from(">BBBBHHHBBB", data)
        if bpp not in (8, 16, 32):
            raise RfbProtocolError(f"pixel format of {bpp} bits per pixel")
        return cls(bpp, depth, bool(true_colour), (r, g, b), (rs, gs, bs))

    @property
    def bytes_per_pixel(self) -> int:
        return self.bits_per_pixel // 8

    @property
    def tight_pixel(self) -> int:
        """Tight sends 32-bit 888 pixels in 3 bytes ("TPIXEL"), any other format as is."""
        is_888 = (self.bits_per_pixel == 32 and self.depth == 24 and self.true_colour
                  and self.maxima == (255, 255, 255) and all(s % 8 == 0 for s in self.shifts))
        return 3 if is_888 else self.bytes_per_pixel


SERVER_CUT_TEXT = 3
SERVER_TYPES = {0: "FramebufferUpdate", 1: "SetColourMapEntries", 2: "Bell", SERVER_CUT_TEXT: "ServerCutText",
                150: "EndOfContinuousUpdates", 248: "ServerFence", 250: "xvp"}
_READ, _SKIP = 0, 1  # the parser's requests: n bytes it needs to see, n bytes it passes on unseen
_FOREVER = 1 << 62
Parser = Generator[tuple[int, int], bytes, None]


class ServerStream:
    """Parser state for one connection's server→client bytes.

    ``feed(data, view_only)`` returns the bytes to send on to the browser: everything but
    ServerCutText (plain or extended clipboard) while ``view_only`` holds, decided per message.
    Large payloads (pixels, clipboard text) stream through without being buffered.
    """

    def __init__(self, client: ClientStream) -> None:
        self._client = client
        self.server_format = PixelFormat()  # ServerInit's
        self.client_format: PixelFormat | None = None  # SetPixelFormat's, in force whenever sent
        self.dropped: list[str] = []
        self._drop = False  # the current message's fate
        self._view_only: Callable[[], bool] = lambda: False
        self._header = bytearray()
        self._parser = self._parse()
        self._want = next(self._parser)

    @property
    def pixel_format(self) -> PixelFormat:
        """The server reads SetPixelFormat only after sending ServerInit, so the client's wins."""
        return self.client_format or self.server_format

    def feed(self, data: bytes, view_only: bool | Callable[[], bool] = False) -> bytes:
        self._view_only = view_only if callable(view_only) else (lambda: view_only)
        out: list[bytes] = []
        pos, end = 0, len(data)
        while True:
            op, n = self._want
            if op == _SKIP:
                take = min(n, end - pos)
                if take and not self._drop:
                    out.append(data[pos:pos + take])
                pos += take
                if take < n:
                    self._want = (_SKIP, n - take)
                    break
                self._want = self._parser.send(b"")
                continue
            if not self._header and end - pos >= n:  # the usual case: the whole header is here
                seen = data[pos:pos + n]
                pos += n
            else:
                take = min(n - len(self._header), end - pos)
                self._header += data[pos:pos + take]
                pos += take
                if len(self._header) < n:
                    break
                seen = bytes(self._header)
                self._header.clear()
            self._want = self._parser.send(seen)  # may decide this message's fate first
            if not self._drop:
                out.append(seen)
        return b"".join(out)

    def _parse(self) -> Parser:
        version = yield _READ, 12
        if not _VERSION.match(version):
            raise RfbProtocolError(f"server speaks {version[:11]!r}")
        if not (yield from self._security()):
            yield _SKIP, _FOREVER  # refused: the server says why and closes
        init = yield _READ, 24
        self.server_format = PixelFormat.parse(init[4:20])
        yield _SKIP, struct.unpack_from(">I", init, 20)[0]  # desktop name
        while True:
            (kind,) = yield _READ, 1
            if kind not in SERVER_TYPES:
                raise RfbProtocolError(f"unknown server message type {kind}")
            self._drop = kind == SERVER_CUT_TEXT and self._view_only()
            if self._drop:
                self.dropped.append(SERVER_TYPES[kind])
            yield from self._message(kind)

    def _security(self) -> Generator[tuple[int, int], bytes, bool]:
        """The server's half of the handshake for the version the client chose; False if refused."""
        first = yield _READ, 1
        if self._client.version == b"RFB 003.003\n":
            (chosen,) = struct.unpack(">I", first + (yield _READ, 3))
            if chosen not in (0, SECURITY_NONE):
                raise RfbProtocolError(f"server chose security type {chosen}")
            return chosen == SECURITY_NONE
        if first[0] == 0:
            return False
        yield _SKIP, first[0]  # the offered types; the client's choice was checked
        if self._client.version == b"RFB 003.008\n":
            result = yield _READ, 4
            return result == b"\0\0\0\0"
        return True

    def _message(self, kind: int) -> Parser:
        if kind == 0:
            yield from self._framebuffer_update()
        elif kind == 1:
            yield _SKIP, 6 * struct.unpack_from(">H", (yield _READ, 5), 3)[0]
        elif kind == SERVER_CUT_TEXT:
            (length,) = struct.unpack_from(">i", (yield _READ, 7), 3)  # negative: extended clipboard
            yield _SKIP, abs(length)
        elif kind == 248:
            yield _SKIP, (yield _READ, 8)[7]
        elif kind == 250:
            yield _SKIP, 3
        # Bell and EndOfContinuousUpdates are one byte

    def _framebuffer_update(self) -> Parser:
        (count,) = struct.unpack_from(">H", (yield _READ, 3), 1)
        for _ in range(count):
            _x, _y, w, h, encoding = struct.unpack(">HHHHi", (yield _READ, 12))
            if encoding == LAST_RECT:
                return
            yield from self._rectangle(w, h, encoding)

    def _rectangle(self, w: int, h: int, encoding: int) -> Parser:
        bpp = self.pixel_format.bytes_per_pixel
        mask = (w + 7) // 8 * h
        if encoding == RAW:
            yield _SKIP, w * h * bpp
        elif encoding == COPY_RECT:
            yield _SKIP, 4
        elif encoding == RRE:
            yield _SKIP, bpp + (bpp + 8) * struct.unpack(">I", (yield _READ, 4))[0]
        elif encoding == TIGHT:
            yield from self._tight(w, h)
        elif encoding in (ZRLE, DESKTOP_NAME):
            yield _SKIP, struct.unpack(">I", (yield _READ, 4))[0]
        elif encoding == CURSOR:
            yield _SKIP, w * h * bpp + mask
        elif encoding == X_CURSOR:
            yield _SKIP, 6 + 2 * mask if w * h else 0
        elif encoding == VMWARE_CURSOR:
            alpha = (yield _READ, 2)[0] == 1
            yield _SKIP, w * h * 4 if alpha else 2 * w * h * bpp
        elif encoding == EXTENDED_DESKTOP_SIZE:
            yield _SKIP, 16 * (yield _READ, 4)[0]
        elif encoding not in (DESKTOP_SIZE, QEMU_KEY):
            raise RfbProtocolError(f"server used encoding {encoding}, which was not offered")

    def _tight(self, w: int, h: int) -> Parser:
        """Tight's sub-encodings (rfbproto §7.7.6): fill, JPEG, or zlib-or-raw basic data."""
        control = (yield _READ, 1)[0] >> 4
        pixel = self.pixel_format.tight_pixel
        if control == 8:  # fill
            yield _SKIP, pixel
            return
        if control == 9:  # JPEG
            yield _SKIP, (yield from self._compact_length())
            return
        if control > 9:
            raise RfbProtocolError(f"unknown Tight compression {control:#x}")
        filter_id = (yield _READ, 1)[0] if control & 4 else 0
        if filter_id == 1:  # palette
            colours = (yield _READ, 1)[0] + 1
            yield _SKIP, colours * pixel
            size = ((w + 7) // 8 if colours <= 2 else w) * h
        elif filter_id in (0, 2):  # copy, gradient
            size = w * h * pixel
        else:
            raise RfbProtocolError(f"unknown Tight filter {filter_id}")
        yield _SKIP, size if size < 12 else (yield from self._compact_length())

    def _compact_length(self) -> Generator[tuple[int, int], bytes, int]:
        length, shift = 0, 0
        for _ in range(3):
            (byte,) = yield _READ, 1
            length |= (byte & (0x7F if shift < 14 else 0xFF)) << shift
            if shift == 14 or not byte & 0x80:
                break
            shift += 7
        return length
