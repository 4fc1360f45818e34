"""The desktop websocket of a plain jupyter server with our extension (no hub): it is ours, not
jupyter-server-proxy's raw bridge — it parses RFB, closes on garbage, counts only input as activity."""
from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.instance.jupyter import JupyterServer
from tests.rfb import RfbClient, wait_closed
from tests.support import wait_for

pytestmark = pytest.mark.root  # starts a jupyter-server with Xvnc


@pytest.fixture
def server(tmp_path: Path) -> Iterator[JupyterServer]:
    s = JupyterServer(tmp_path / "server", env_extra={"VISA_SCREEN": "800x600"}).start()
    yield s
    s.stop()


def connect(server: JupyterServer) -> RfbClient:
    import websocket

    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/desktop/?token={server.token}", timeout=30)
    return RfbClient(ws)


def last_activity(server: JupyterServer) -> str:
    with urllib.request.urlopen(f"{server.url}api/status?token={server.token}", timeout=10) as r:
        return json.load(r)["last_activity"]


def test_garbage_after_the_handshake_closes_the_connection(server: JupyterServer) -> None:
    client = connect(server)
    assert (client.width, client.height) == (800, 600)
    client.screen()
    client.ws.send_binary(b"\x07garbage")
    wait_closed(client)
    assert "protocol error" in server.log() or "unknown client message type 7" in server.log()
    again = connect(server)  # the desktop itself is unharmed
    again.screen()
    again.close()


def test_only_input_counts_as_activity(server: JupyterServer) -> None:
    client = connect(server)
    client.screen()
    quiet = last_activity(server)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:  # a tab showing the desktop: updates flow, no input
        client.screen()
    assert last_activity(server) == quiet
    client.key(0xFFE1, True)  # shift, pressed and released
    client.key(0xFFE1, False)
    client.screen()
    wait_for(lambda: last_activity(server) != quiet, 10, "input to count as activity")
    client.close()
