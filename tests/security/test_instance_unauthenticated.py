"""The instance refuses people it does not know before any handler does work for them.

jupyter-server-ydoc's collaboration websocket built its room (and started a file loader) in
``prepare`` before asking who the caller was: an unauthenticated request got a 500 and left
work behind. With ``ServerApp.allow_unauthenticated_access = False`` (visa_instance's shipped
settings) jupyter-server refuses every handler not marked as public before it runs.
"""
from __future__ import annotations

import http.client
import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.instance.jupyter import JupyterServer

pytestmark = pytest.mark.root  # starts a jupyter-server from the instance env

INSTANCE_PYTHON = Path(os.environ.get("VISA_INSTANCE_ENV", "/opt/visahub/instance-env")) / "bin" / "python"
WS_HEADERS = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
              "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


def status(url: str, headers: dict | None = None) -> int:
    """The status of one GET, redirects not followed (urllib would rewrite the Upgrade headers)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers or {})
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> JupyterServer:
    assert INSTANCE_PYTHON.exists(), f"no instance env at {INSTANCE_PYTHON}: run scripts/setup.sh"
    srv = JupyterServer(tmp_path_factory.mktemp("unauth"), python=str(INSTANCE_PYTHON),
                        copy_shipped_config=False).start()
    yield srv
    srv.stop()


def test_the_collaboration_room_is_refused_before_it_is_built(server: JupyterServer) -> None:
    url = f"{server.url}api/collaboration/room/json:notebook:{'0' * 32}"
    before = len(server.log())
    assert status(url, WS_HEADERS) in (302, 403)  # to the login page, or refused: nothing built
    assert "FileLoader" not in server.log()[before:] and "Traceback" not in server.log()[before:]


@pytest.mark.parametrize("path", ["api/collaboration/session/x.ipynb", "api/contents/", "api/kernels",
                                  "api/collaboration/timeline/x.ipynb", "api/me"])
def test_every_api_route_needs_a_known_caller(server: JupyterServer, path: str) -> None:
    before = len(server.log())
    assert status(server.url + path) in (302, 403)
    assert "Traceback" not in server.log()[before:]
    assert status(f"{server.url}{path}?token={server.token}") not in (302, 403)  # the token holder is let in


def test_the_status_route_the_hub_polls_stays_public(server: JupyterServer) -> None:
    assert status(server.url + "api") == 200
