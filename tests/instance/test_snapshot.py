"""The trainer's grid, instance side: the desktop snapshot (a real jupyter-server with our extension and a
real Xvnc) and the course banner added to a course instance's pages."""
from __future__ import annotations

import json
import struct
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.collab.conftest import INSTANCE_ENV
from tests.instance.desktop_x import launcher_of
from tests.instance.jupyter import REPO, JupyterServer
from tests.instance.test_desktop_server import raw_request
from tests.rfb import RfbClient
from visa_instance.authorizer import FULL, NONE, VIEW, route_allowed
from visa_instance.broadcast import banner_transform, broadcast_url, training_prefix
from visa_instance.room import Room
from visa_instance.snapshot import parse_width


def test_who_may_reach_the_snapshot() -> None:
    """A view-only member (GUEST) may, someone without a role may not (the gate's rule)."""
    for level, allowed in ((FULL, True), (VIEW, True), (NONE, False)):
        assert route_allowed(level, "visa/desktop/snapshot.png") is allowed
    assert not route_allowed(VIEW, "visa/desktop/snapshot.png/../../api/contents")


@pytest.mark.parametrize("raw,expected", [(None, 320), ("", 320), ("64", 64), ("1280", 1280)])
def test_width(raw: str | None, expected: int) -> None:
    assert parse_width(raw) == expected


@pytest.mark.parametrize("raw", ["0", "31", "1281", "-5", "3e2", "320px", "９"])
def test_bad_width(raw: str) -> None:
    with pytest.raises(ValueError, match="from 32 to 1280"):
        parse_width(raw)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    # the instance env's Python (Pillow), as in an instance, with this checkout's visa_instance
    s = JupyterServer(tmp_path_factory.mktemp("snapshot") / "server",
                      env_extra={"VISA_SCREEN": "800x600", "PYTHONPATH": str(REPO),
                                 "JUPYTERHUB_SERVER_NAME": "course-python-neutron",
                                 "VISA_TRAINING_PREFIX": "/services/visa-training/"},
                      python=str(INSTANCE_ENV / "bin" / "python")).start()
    yield s
    s.stop()


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])


def distinct_colours(png: bytes) -> int:
    """How many colours the PNG holds, decoded by Pillow in the instance env (the hub venv has none)."""
    code = ("import sys, io; from PIL import Image; "
            "print(len(Image.open(io.BytesIO(sys.stdin.buffer.read())).convert('RGB').getcolors(1 << 20) or []))")
    out = subprocess.run([str(INSTANCE_ENV / "bin" / "python"), "-c", code], input=png, capture_output=True,
                         check=True)
    return int(out.stdout)


@pytest.mark.root
def test_snapshot_of_a_live_desktop(server: JupyterServer) -> None:
    import websocket

    path = f"/visa/desktop/snapshot.png?token={server.token}"
    # no desktop yet: a clear 404, and asking does not start one
    status, headers, body = raw_request(server, path)
    assert status == 404 and json.loads(body)["message"] == "The desktop of this instance is not started."
    assert not launcher_of(server)
    status, _, body = raw_request(server, f"{path}&w=5000")
    assert status == 400 and "from 32 to 1280" in json.loads(body)["message"]
    # not logged in: no picture
    status, _, body = raw_request(server, "/visa/desktop/snapshot.png")
    assert status in (302, 403) and not body.startswith(b"\x89PNG")

    # the owner opens the desktop (websocket), which starts it
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/desktop/?token={server.token}", timeout=30)
    client = RfbClient(ws)
    try:
        assert (client.width, client.height) == (800, 600)
        client.screen()
        started = time.monotonic()
        status, headers, png = raw_request(server, f"{path}&w=320")
        first = time.monotonic() - started
        assert status == 200, png[:300]
        assert headers["Content-Type"] == "image/png"
        assert png_size(png) == (320, 240)
        assert distinct_colours(png) > 20  # the background, the terminal, the panel: not a blank frame
        started = time.monotonic()
        status, _, again = raw_request(server, f"{path}&w=320")
        cached = time.monotonic() - started
        assert status == 200 and again == png  # within the cache's 2 s: the same picture
        status, _, default = raw_request(server, path)
        assert status == 200 and png_size(default) == (320, 240)
        status, _, big = raw_request(server, f"{path}&w=1280")
        assert status == 200 and png_size(big) == (800, 600)  # never enlarged
        print(f"snapshot: first {first * 1000:.0f} ms, cached {cached * 1000:.0f} ms, {len(png)} bytes")
    finally:
        client.close()


def test_course_banner_urls() -> None:
    prefix = "/services/visa-training/"
    assert broadcast_url(prefix, "course-python-neutron") == "/services/visa-training/api/courses/python-neutron/broadcast"
    for server in ("", "my-run", "course-", "course-UPPER", "course-a/../b", "xcourse-a"):
        assert broadcast_url(prefix, server) == ""
    assert broadcast_url("", "course-a") == ""
    assert training_prefix({"JUPYTERHUB_USER": "u", "JUPYTERHUB_BASE_URL": "/jh/"}) == "/jh/services/visa-training/"
    assert training_prefix({}) == ""
    assert training_prefix({"VISA_TRAINING_PREFIX": "/t/", "JUPYTERHUB_USER": "u"}) == "/t/"


def test_course_banner_transform() -> None:
    """The tag goes before the last </body> of Lab's and the desktop's HTML pages, nowhere else."""

    class Request:
        def __init__(self, path: str, method: str = "GET") -> None:
            self.path, self.method = path, method

    cls = banner_transform("/user/u/course-a/", "/services/visa-training/api/courses/a/broadcast")
    page = b"<html><body><p>x</p></body></html>"
    for path in ("/user/u/course-a/lab", "/user/u/course-a/lab/tree/x.ipynb", "/user/u/course-a/visa/desktop"):
        _, headers, out = cls(Request(path)).transform_first_chunk(
            200, {"Content-Type": "text/html", "Content-Length": str(len(page))}, page, True)
        assert out.count(b"visa/static/broadcast.js") == 1 and out.endswith(b"</script></body></html>")
        assert headers["Content-Length"] == str(len(out))
    for request, status, kind in ((Request("/user/u/course-a/api/contents"), 200, "text/html"),
                                  (Request("/user/u/course-a/lab", "POST"), 200, "text/html"),
                                  (Request("/user/u/course-a/lab"), 404, "text/html"),
                                  (Request("/user/u/course-a/lab"), 200, "application/json"),
                                  (Request("/user/u/other/lab"), 200, "text/html")):
        assert cls(request).transform_first_chunk(status, {"Content-Type": kind}, page, True)[2] == page


def test_a_service_sees_who_is_here() -> None:
    """The grid's presence: the room tells the owner and a hub service with access, not a member."""
    room = Room("frank", "course-a")
    service = {"kind": "service", "name": "visa-training", "scopes": ["access:servers"]}
    guest = {"kind": "user", "name": "tina", "scopes": ["access:servers!server=frank/course-a",
                                                        "custom:visa-guest!server=frank/course-a"]}
    assert room.room_model(service)["present"] == []
    assert room.room_model({"kind": "user", "name": "frank", "scopes": []})["present"] == []
    assert "present" not in room.room_model(guest)


@pytest.mark.root
def test_course_banner_in_the_pages(server: JupyterServer) -> None:
    for path in ("/lab", "/visa/desktop"):
        status, _, body = raw_request(server, f"{path}?token={server.token}")
        assert status == 200, (path, body[:300])
        assert (b'<script src="/visa/static/broadcast.js" '
                b'data-broadcast="/services/visa-training/api/courses/python-neutron/broadcast" '
                b'data-room="/visa/api/room" defer></script></body>') in body, path
    status, headers, body = raw_request(server, f"/visa/static/broadcast.js?token={server.token}")
    assert status == 200 and b"visa-course-banner" in body and "javascript" in headers["Content-Type"]
