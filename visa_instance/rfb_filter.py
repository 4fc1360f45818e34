"""The client→server half of an RFB (VNC) connection, parsed message by message.

The desktop websocket (:mod:`visa_instance.desktop_socket`) feeds every byte a browser sends
through :class:`ClientStream` before it reaches the VNC server. The parser follows the protocol
(RFC 6143 plus the extensions noVNC and TigerVNC speak): the handshake (version, security type,
ClientInit), then one message at a time, however the bytes are split across websocket frames.
Each message is either forwarded whole or dropped whole, so the server never sees a torn
message; for a view-only member the *input* messages (keyboard, pointer, clipboard, screen
resize, power actions) are dropped. Anything the parser does not know closes the connection:
an unknown message type cannot be skipped safely (its length is unknown), and a client that
sends one is not one of ours.

Pure: no I/O, no clock; tested table-driven in ``tests/collab/test_rfb_filter.py`` (``-m fast``).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
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
            else:
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
