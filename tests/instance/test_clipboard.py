"""The clipboard between the browser and a real Xvnc: both ways for a full member, neither for a
view-only one (a GUEST). The X side is driven with ``xclip`` on the desktop's own display."""
from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from tests.instance.desktop_x import X
from tests.instance.jupyter import JupyterServer
from tests.rfb import RfbClient
from tests.support import wait_for
from visa_instance.rfb_filter import EXTENDED_CLIPBOARD, ClientStream

pytestmark = pytest.mark.root  # starts a jupyter-server with Xvnc


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    s = JupyterServer(tmp_path_factory.mktemp("clipboard") / "server", env_extra={"VISA_SCREEN": "640x480"}).start()
    yield s
    s.stop()


def connect(server: JupyterServer) -> RfbClient:
    """The owner (token login: a full member) through the desktop websocket."""
    import websocket

    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/desktop/?token={server.token}", timeout=30)
    return RfbClient(ws)


class FilteredUnixSocket:
    """The desktop websocket's filtering for a view-only member, in-process, on Xvnc's own socket:
    the same ClientStream/ServerStream the handler runs, with ``view_only`` held True."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(path)
        self.stream = ClientStream()

    def send_binary(self, data: bytes) -> None:
        self.sock.sendall(self.stream.feed(data, view_only=True).forward)

    def recv(self) -> bytes:
        while True:
            data = self.sock.recv(1 << 16)
            if not data:
                return b""
            out = self.stream.server.feed(data, view_only=True)
            if out:
                return out

    def settimeout(self, seconds: float) -> None:
        self.sock.settimeout(seconds)

    def close(self) -> None:
        self.sock.close()


def client_cut_text(text: bytes) -> bytes:
    return struct.pack(">Bxxxi", 6, len(text)) + text


def received(client: RfbClient, text: bytes) -> bool:
    client.screen()  # a barrier: what the server sent before this update has been read
    return text in client.cut_texts


@pytest.fixture
def x(server: JupyterServer) -> Iterator[X]:
    owner = connect(server)  # the desktop starts with the first connection
    owner.screen()
    display = X(server)
    yield display
    display.close()
    owner.close()


def test_copy_in_the_desktop_paste_in_the_browser_and_back(server: JupyterServer, x: X) -> None:
    user = connect(server)
    x.copy("Grüße from the desktop")
    wait_for(lambda: received(user, "Grüße from the desktop".encode("latin-1")), 15,
             "the desktop's clipboard to arrive as ServerCutText")

    user.ws.send_binary(client_cut_text("pasted in the browser: 1.5 Å".encode("latin-1")))
    wait_for(lambda: x.clipboard() == "pasted in the browser: 1.5 Å", 15,
             f"the browser's text in the X clipboard (now {x.clipboard()!r})")
    user.close()


def test_a_view_only_member_gets_and_gives_no_clipboard(server: JupyterServer, x: X) -> None:
    witness = connect(server)  # a full member: proves the server did send the clipboard
    guest = RfbClient(FilteredUnixSocket(x.rfb_socket))
    # noVNC's clipboard: the extended pseudo-encoding (caps and notify messages from the server)
    guest.ws.send_binary(struct.pack(">BxHii", 2, 2, 0, EXTENDED_CLIPBOARD))
    guest.screen()
    x.copy("the owner's password is hunter2")
    wait_for(lambda: received(witness, b"the owner's password is hunter2"), 15, "the clipboard at the full member")
    guest.screen()
    assert guest.cut_texts == []
    assert "ServerCutText" in guest.ws.stream.server.dropped  # sent by Xvnc, withheld by the filter

    guest.ws.send_binary(client_cut_text(b"pasted by the guest"))
    guest.ws.send_binary(struct.pack(">Bxxxi", 6, -8) + b"\x10\x00\x00\x01" + b"zlib")  # extended provide
    guest.screen()
    witness.ws.send_binary(client_cut_text(b"the owner's text"))
    wait_for(lambda: x.clipboard() == "the owner's text", 15, "the full member's paste to land")
    assert "pasted by the guest" not in x.clipboard()
    guest.close()
    witness.close()
