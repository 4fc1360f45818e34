"""The RFB server-stream parser: the clipboard withheld from view-only members (``-m fast``)."""
from __future__ import annotations

import logging
import struct

import pytest

from tests.instance.test_rfb_filter import FBUR, HANDSHAKE, PIXEL_FORMAT, set_encodings
from visa_instance.authorizer import FULL, VIEW
from visa_instance.desktop_socket import CLOSE_PROTOCOL_ERROR, DesktopSocketMixin
from visa_instance.rfb_filter import (
    EXTENDED_CLIPBOARD,
    VMWARE_CURSOR,
    ClientStream,
    RfbProtocolError,
    parsed_encodings_only,
)
from visa_instance.room import Connection

NAME = b"alice's desktop"
SERVER_INIT = struct.pack(">HH", 1280, 720) + PIXEL_FORMAT[4:] + struct.pack(">I", len(NAME)) + NAME
SERVER_HANDSHAKE = b"RFB 003.008\n" + b"\x01\x01" + bytes(4) + SERVER_INIT  # one type (None), result OK


def rect(w: int, h: int, encoding: int, payload: bytes = b"") -> bytes:
    return struct.pack(">HHHHi", 0, 0, w, h, encoding) + payload


def update(*rects: bytes, count: int | None = None) -> bytes:
    return struct.pack(">BxH", 0, len(rects) if count is None else count) + b"".join(rects)


def cut(text: bytes, extended: bool = False) -> bytes:
    return struct.pack(">Bxxxi", 3, -len(text) if extended else len(text)) + text


RECTANGLES = [
    ("raw", rect(2, 3, 0, bytes(2 * 3 * 4))),
    ("copy rect", rect(8, 8, 1, bytes(4))),
    ("rre", rect(8, 8, 2, struct.pack(">I", 2) + bytes(4) + bytes(2 * 12))),
    ("tight fill", rect(64, 64, 7, b"\x80" + b"\x03" * 3)),
    ("tight jpeg, 2-byte length", rect(64, 64, 7, b"\x90" + bytes([0x81, 0x01]) + b"J" * 129)),
    ("tight jpeg, 3-byte length", rect(64, 64, 7, b"\x90" + bytes([0x80, 0x80, 0x01]) + b"J" * 16384)),
    ("tight copy, raw (< 12 bytes)", rect(3, 1, 7, b"\x00" + b"p" * 9)),
    ("tight copy, zlib", rect(4, 4, 7, b"\x10" + bytes([20]) + b"z" * 20)),
    ("tight palette of 2, raw", rect(16, 5, 7, b"\x40\x01\x01" + b"c" * 6 + b"b" * 10)),
    ("tight palette of 5, zlib", rect(16, 5, 7, b"\x60\x01\x04" + b"c" * 15 + bytes([30]) + b"z" * 30)),
    ("tight gradient, zlib", rect(8, 8, 7, b"\x40\x02" + bytes([50]) + b"z" * 50)),
    ("zrle", rect(64, 64, 16, struct.pack(">I", 33) + b"z" * 33)),
    ("cursor", rect(9, 2, -239, bytes(9 * 2 * 4) + bytes(2 * 2))),
    ("x cursor", rect(9, 2, -240, bytes(6) + bytes(2 * 2 * 2))),
    ("empty x cursor", rect(0, 0, -240)),
    ("vmware alpha cursor", rect(3, 3, VMWARE_CURSOR, b"\x01\x00" + bytes(3 * 3 * 4))),
    ("vmware classic cursor", rect(3, 3, VMWARE_CURSOR, b"\x00\x00" + bytes(2 * 3 * 3 * 4))),
    ("desktop size", rect(800, 600, -223)),
    ("extended desktop size", rect(800, 600, -308, b"\x02\x00\x00\x00" + bytes(32))),
    ("desktop name", rect(0, 0, -307, struct.pack(">I", 4) + b"name")),
    ("qemu key ack", rect(0, 0, -258)),
]
CLIPBOARD = [cut(b"the owner's secret"), cut(b"\x10\x00\x00\x01" + b"zlib", extended=True), cut(b"")]
OTHERS = [
    update(*(r for _n, r in RECTANGLES)),
    update(RECTANGLES[0][1], rect(0, 0, -224), count=0xFFFF),  # LastRect ends an update of unknown size
    struct.pack(">BxHH", 1, 0, 2) + bytes(12),  # colour map entries
    b"\x02",  # bell
    b"\x96",  # end of continuous updates
    struct.pack(">BxxxIB", 248, 0x80000003, 4) + b"abcd",  # fence
    bytes([250, 0, 1, 1]),  # xvp
]


def stream_of(view_only: bool, chunk: int, server_bytes: bytes) -> tuple[bytes, list[str]]:
    client = ClientStream()
    client.feed(HANDSHAKE)
    out = b""
    for i in range(0, len(server_bytes), chunk):
        out += client.server.feed(server_bytes[i:i + chunk], view_only)
    return out, client.server.dropped


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1 << 20])
@pytest.mark.parametrize("view_only", [False, True])
def test_clipboard_reaches_full_members_only(view_only: bool, chunk: int) -> None:
    messages = [m for pair in zip(OTHERS, (CLIPBOARD * 3)[:len(OTHERS)], strict=True) for m in pair]
    out, dropped = stream_of(view_only, chunk, SERVER_HANDSHAKE + b"".join(messages))
    if view_only:
        assert out == SERVER_HANDSHAKE + b"".join(OTHERS)
        assert dropped == ["ServerCutText"] * len(OTHERS)
    else:
        assert out == SERVER_HANDSHAKE + b"".join(messages) and dropped == []


@pytest.mark.parametrize("name, rectangle", RECTANGLES)
def test_each_rectangle_is_delimited(name: str, rectangle: bytes) -> None:
    """A cut text right after the rectangle is found: its length was read exactly."""
    out, dropped = stream_of(True, 5, SERVER_HANDSHAKE + update(rectangle) + CLIPBOARD[0] + b"\x02")
    assert out == SERVER_HANDSHAKE + update(rectangle) + b"\x02" and dropped == ["ServerCutText"], name


def test_view_only_is_asked_per_message() -> None:
    """A member whose room gets locked stops receiving the clipboard from the next message."""
    client = ClientStream()
    client.feed(HANDSHAKE)
    answers = iter([False, True])
    out = client.server.feed(SERVER_HANDSHAKE + CLIPBOARD[0] + CLIPBOARD[0], lambda: next(answers))
    assert out == SERVER_HANDSHAKE + CLIPBOARD[0]


@pytest.mark.parametrize("version, server_security", [
    (b"RFB 003.007\n", b"\x01\x01"),  # no SecurityResult for None in 3.7
    (b"RFB 003.003\n", b"\x00\x00\x00\x01"),  # 3.3: the server names the type
])
def test_older_handshakes(version: bytes, server_security: bytes) -> None:
    client = ClientStream()
    client.feed(version + (b"\x01\x01" if version != b"RFB 003.003\n" else b"\x01"))
    data = b"RFB 003.008\n" + server_security + SERVER_INIT + CLIPBOARD[0] + b"\x02"
    assert client.server.feed(data, True) == data[:-len(CLIPBOARD[0]) - 1] + b"\x02"


def test_a_refusal_passes_through() -> None:
    client = ClientStream()
    client.feed(HANDSHAKE)
    refusal = b"RFB 003.008\n\x00" + struct.pack(">I", 6) + b"go away"
    assert client.server.feed(refusal, True) == refusal


@pytest.mark.parametrize("server_bytes, message", [
    (b"HTTP/1.1 200", "server speaks"),
    (SERVER_HANDSHAKE + b"\x07", "unknown server message type 7"),
    (SERVER_HANDSHAKE + update(rect(8, 8, 5)), "encoding 5, which was not offered"),  # Hextile
    (SERVER_HANDSHAKE + update(rect(8, 8, 7, b"\xa0")), "unknown Tight compression"),
    (SERVER_HANDSHAKE + update(rect(8, 8, 7, b"\x40\x03")), "unknown Tight filter 3"),
])
def test_server_protocol_errors(server_bytes: bytes, message: str) -> None:
    with pytest.raises(RfbProtocolError, match=message):
        stream_of(False, 1 << 20, server_bytes)


NOVNC_1_3 = [1, 7, -260, 5, 2, 0, -26, -254, -223, -224, -258, -308, -309, -312, -313, -307,
             EXTENDED_CLIPBOARD, VMWARE_CURSOR, -239]


def test_set_encodings_keeps_what_the_server_stream_parses() -> None:
    assert parsed_encodings_only(set_encodings(*NOVNC_1_3)) == set_encodings(
        *[e for e in NOVNC_1_3 if e not in (-260, 5)])  # TightPNG, Hextile
    client = ClientStream()
    fed = client.feed(HANDSHAKE + set_encodings(5, 21, 0))
    assert fed.forward == HANDSHAKE + set_encodings(0)


def test_pixel_format_follows_the_client_until_updates_flow() -> None:
    client = ClientStream()
    client.feed(b"RFB 003.008\n\x01\x01")
    sixteen = bytes(4) + struct.pack(">BBBBHHHBBBxxx", 16, 16, 0, 1, 31, 63, 31, 11, 5, 0)
    client.feed(sixteen)  # sent early: the server still applies it after its ServerInit
    client.server.feed(SERVER_HANDSHAKE)
    assert client.server.pixel_format.bytes_per_pixel == 2
    raw = rect(2, 2, 0, bytes(2 * 2 * 2))  # 16 bpp pixels
    assert client.server.feed(update(raw) + CLIPBOARD[0], True) == update(raw)
    client.feed(FBUR)
    with pytest.raises(RfbProtocolError, match="SetPixelFormat once updates flow"):
        client.feed(sixteen)


class _Bridge:
    """jupyter-server-proxy's raw bridge, as far as the desktop websocket's write_message sees it."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed_with: tuple[int, str] | None = None
        self.log = logging.getLogger("test")

    def write_message(self, message: bytes, binary: bool = False) -> None:
        self.sent.append(message)

    def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)


class _Socket(DesktopSocketMixin, _Bridge):
    pass


def test_the_desktop_websocket_withholds_the_clipboard_from_view_only_members() -> None:
    """The handler's hook: per connection, per message, following the room's level."""
    handler = _Socket()
    conn = Connection({"name": "bob"}, "user", "desktop", lambda: handler, level=FULL, stream=ClientStream())
    handler._visa_conn = conn
    conn.stream.feed(HANDSHAKE)
    handler.write_message(SERVER_HANDSHAKE + CLIPBOARD[0], binary=True)
    conn.level = VIEW  # the owner left and the room locked
    handler.write_message(CLIPBOARD[0] + b"\x02", binary=True)
    handler.write_message(CLIPBOARD[1], binary=True)  # nothing left to send: nothing written
    assert handler.sent == [SERVER_HANDSHAKE + CLIPBOARD[0], b"\x02"]
    handler.write_message(b"\x07", binary=True)
    assert handler.closed_with == (CLOSE_PROTOCOL_ERROR, "protocol error") and conn.closed
    handler.write_message(b"\x02", binary=True)  # the rest of the server's chunk while it closes
    assert handler.sent == [SERVER_HANDSHAKE + CLIPBOARD[0], b"\x02"]
