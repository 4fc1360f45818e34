"""The RFB client-stream parser: table-driven, no processes (``-m fast``)."""
from __future__ import annotations

import struct

import pytest

from visa_instance.rfb_filter import KINDS, MAX_CUT_TEXT, ClientStream, RfbProtocolError, message_length

HANDSHAKE = b"RFB 003.008\n" + b"\x01" + b"\x01"  # version, security None, ClientInit shared


def key(down: int = 1, keysym: int = 0x61) -> bytes:
    return struct.pack(">BBxxI", 4, down, keysym)


def pointer(mask: int = 1, x: int = 10, y: int = 20) -> bytes:
    return struct.pack(">BBHH", 5, mask, x, y)


def cut_text(text: bytes, extended: bool = False) -> bytes:
    length = -len(text) if extended else len(text)
    return struct.pack(">Bxxxi", 6, length) + text


def set_encodings(*encodings: int) -> bytes:
    return struct.pack(">BxH", 2, len(encodings)) + b"".join(struct.pack(">i", e) for e in encodings)


FBUR = struct.pack(">BBHHHH", 3, 1, 0, 0, 1280, 720)
PIXEL_FORMAT = bytes([0, 0, 0, 0]) + struct.pack(">BBBBHHHBBBxxx", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
CONTINUOUS = struct.pack(">BBHHHH", 150, 1, 0, 0, 1280, 720)
FENCE = struct.pack(">BxxxIB", 248, 0x80000003, 4) + b"abcd"
DESKTOP_SIZE = struct.pack(">BxHHBx", 251, 800, 600, 1) + bytes(16)
XVP = bytes([250, 0, 1, 2])
QEMU_KEY = struct.pack(">BBHII", 255, 0, 1, 0x61, 30)

MESSAGES = [
    # (name, bytes, is input)
    ("SetPixelFormat", PIXEL_FORMAT, False),
    ("SetEncodings", set_encodings(0, 1, -223, -308), False),
    ("SetEncodings", set_encodings(), False),
    ("FramebufferUpdateRequest", FBUR, False),
    ("KeyEvent", key(), True),
    ("PointerEvent", pointer(), True),
    ("ClientCutText", cut_text(b"secret"), True),
    ("ClientCutText", cut_text(b"\x00\x00\x00\x01", extended=True), True),
    ("ClientCutText", cut_text(b""), True),
    ("EnableContinuousUpdates", CONTINUOUS, False),
    ("ClientFence", FENCE, False),
    ("SetDesktopSize", DESKTOP_SIZE, True),
    ("xvp", XVP, True),
    ("QEMUExtendedKeyEvent", QEMU_KEY, True),
]


@pytest.mark.parametrize("name, message, is_input", MESSAGES)
def test_message_length_and_kind(name: str, message: bytes, is_input: bool) -> None:
    assert message_length(message) == len(message)
    assert KINDS[message[0]].name == name and KINDS[message[0]].input is is_input
    # every strict prefix is "need more", never a wrong length
    for cut in range(0, len(message)):
        n = message_length(message[:cut])
        assert n is None or n == len(message), (name, cut, n)


@pytest.mark.parametrize("view_only", [False, True])
@pytest.mark.parametrize("name, message, is_input", MESSAGES)
def test_forward_or_drop_whole_messages(name: str, message: bytes, is_input: bool, view_only: bool) -> None:
    stream = ClientStream()
    assert stream.feed(HANDSHAKE).forward == HANDSHAKE
    fed = stream.feed(message + FBUR, view_only)
    if is_input and view_only:
        assert fed.forward == FBUR and fed.dropped == [name]
    else:
        assert fed.forward == message + FBUR and fed.dropped == []
        assert fed.forwarded == [name, "FramebufferUpdateRequest"]
    assert stream.pending == 0


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 13, 64])
def test_any_framing_gives_the_same_result(chunk: int) -> None:
    data = HANDSHAKE + PIXEL_FORMAT + b"".join(m for n, m, _i in MESSAGES if n != "SetPixelFormat") * 2
    expected_forward = HANDSHAKE + PIXEL_FORMAT + b"".join(m for _n, m, i in MESSAGES if not i)[20:] * 2
    stream, out, dropped = ClientStream(), b"", []
    for i in range(0, len(data), chunk):
        fed = stream.feed(data[i:i + chunk], view_only=True)
        out += fed.forward
        dropped += fed.dropped
    assert out == expected_forward
    assert dropped == [n for n, _m, i in MESSAGES if i] * 2
    assert stream.pending == 0


def test_view_only_is_asked_per_message() -> None:
    """A member who becomes view-only mid-stream stops sending input from the next message."""
    stream = ClientStream()
    stream.feed(HANDSHAKE)
    answers = iter([False, True, True])
    fed = stream.feed(key(1) + key(0) + pointer(), lambda: next(answers))
    assert fed.forwarded == ["KeyEvent"] and fed.dropped == ["KeyEvent", "PointerEvent"]
    assert fed.input_forwarded == 1


@pytest.mark.parametrize("version, handshake_rest, forwarded", [
    (b"RFB 003.008\n", b"\x01\x00", b"\x01\x01"),  # ClientInit exclusive → shared
    (b"RFB 003.007\n", b"\x01\x01", b"\x01\x01"),
    (b"RFB 003.003\n", b"\x00", b"\x01"),  # 3.3: no security byte from the client
])
def test_handshake_versions_and_forced_shared(version: bytes, handshake_rest: bytes, forwarded: bytes) -> None:
    stream = ClientStream()
    fed = stream.feed(version + handshake_rest + key(), view_only=True)
    assert fed.forward == version + forwarded
    assert fed.dropped == ["KeyEvent"] and stream.phase == "messages"


@pytest.mark.parametrize("data, message", [
    (b"GET / HTTP/1.1\r\n", "unsupported protocol version"),
    (b"RFB 004.000\n", "unsupported protocol version"),
    (b"RFB 003.008\n\x02", "security type 2"),  # VNC authentication: not what Xvnc offers
    (b"RFB 003.008\n\x13", "security type 19"),
    (HANDSHAKE + b"\x07", "unknown client message type 7"),
    (HANDSHAKE + b"\xfd" + bytes(20), "unknown client message type 253"),
    (HANDSHAKE + b"\xff\x01" + bytes(10), "unknown QEMU client message subtype 1"),
    (HANDSHAKE + struct.pack(">Bxxxi", 6, MAX_CUT_TEXT + 1), "too large"),
    (HANDSHAKE + struct.pack(">Bxxxi", 6, -(MAX_CUT_TEXT + 1)), "too large"),
    (HANDSHAKE + struct.pack(">BxxxIB", 248, 0, 65), "fence payload"),
    (HANDSHAKE + pointer() + b"\x99", "unknown client message type 153"),
])
def test_protocol_errors_close(data: bytes, message: str) -> None:
    with pytest.raises(RfbProtocolError, match=message):
        ClientStream().feed(data, view_only=False)


def test_an_error_after_good_messages_still_raises() -> None:
    """Nothing is forwarded from a feed that breaks the protocol: the connection closes."""
    stream = ClientStream()
    stream.feed(HANDSHAKE)
    with pytest.raises(RfbProtocolError):
        stream.feed(key() + b"\x08")
