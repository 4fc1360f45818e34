"""The trainer's grid, pure parts: the hub's public URL for the service, tiles' state and presence,
the request to an instance, and the collaboration rule that lets a course's trainers watch and help."""
from __future__ import annotations

import pytest

from visa_collab.roles import Role, refusal
from visa_training.grid import Grid, presence_of, proxy_url, server_state


@pytest.mark.parametrize("bind_url,ip,port,expected", [
    ("", "127.0.0.1", 8000, "http://127.0.0.1:8000"),
    ("", "", 0, "http://127.0.0.1:8000"),  # JupyterHub's default bind_url http://:8000
    ("https://0.0.0.0:443/jh/", "", 0, "https://127.0.0.1:443"),
    ("http://hub.example:8080", "", 0, "http://hub.example:8080"),
    ("http://hub.example:8080", "", 9000, "http://hub.example:9000"),  # port wins, as in JupyterHub
    ("http://[::]:8000", "", 0, "http://127.0.0.1:8000"),
    ("http://[::1]:8000", "", 0, "http://[::1]:8000"),
])
def test_proxy_url(bind_url: str, ip: str, port: int, expected: str) -> None:
    assert proxy_url(bind_url, ip, port) == expected


@pytest.mark.parametrize("server,state", [
    (None, "none"), ({}, "none"), ({"ready": True, "pending": None}, "running"),
    ({"ready": False, "pending": "spawn"}, "starting"), ({"ready": True, "pending": "stop"}, "stopping"),
    ({"ready": False, "pending": None, "started": None}, "stopped"),
])
def test_server_state(server: dict | None, state: str) -> None:
    assert server_state(server) == state


def test_presence_keeps_only_what_the_tile_shows() -> None:
    room = {"present": [{"user": "frank", "role": "owner", "channel": "lab", "since": "x", "view_only": False},
                        {"user": "tina", "role": "support", "channel": "desktop", "view_only": 0},
                        {"role": "guest"}, "junk", {"user": "<b>x</b>", "role": None}]}
    assert presence_of(room) == [
        {"user": "frank", "role": "owner", "channel": "lab", "view_only": False},
        {"user": "tina", "role": "support", "channel": "desktop", "view_only": False},
        {"user": "<b>x</b>", "role": "", "channel": "", "view_only": False},  # shown as text by the page
    ]
    assert presence_of({}) == [] and presence_of({"present": None}) == []


def test_instance_request_goes_through_the_hubs_proxy_with_the_services_token() -> None:
    grid = Grid(proxy_url="http://127.0.0.1:8000", api_token="t")
    request = grid.instance_request("/user/frank/course-cls/", "visa/api/room")
    assert request.url == "http://127.0.0.1:8000/user/frank/course-cls/visa/api/room"
    assert request.headers["Authorization"] == "token t"


@pytest.mark.parametrize("role", [Role.GUEST, Role.SUPPORT])
def test_a_course_instance_may_be_watched_and_helped_by_its_trainers(role: Role) -> None:
    staff = ["role:staff"]  # a trainer: no support role, not on the course's proposal
    assert refusal(role, "tina", staff, "P-2021-007", "course-python-neutron", ["tina"]) is None
    assert refusal(role, "tina", staff, None, "course-cls", ["tina"]) is None
    assert refusal(role, "tina", staff, None, "course-cls") is not None  # not this course's trainer
    for server in ("", "my-run", "course-", "xcourse-cls", "course-CLS"):
        assert refusal(role, "tina", staff, "P-2021-007", server, ["tina"]) is not None
    assert refusal(Role.USER, "tina", staff, "P-2021-007", "course-cls", ["tina"]) is not None  # USER: the team only
