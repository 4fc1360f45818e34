"""Per person inside an instance: who may give input to an instrument's panel (beside the room's
level and the gateway's per-instance decision)."""
from __future__ import annotations

import pytest

from visa_instance.desktop_socket import DesktopSocketMixin, desktop_socket_handler
from visa_instance.instrument import may_pilot_here
from visa_instance.instrument_page import socket_routes

TEAM_WITH_RIGHT = ["proposal:P-2026-011", "role:instrument_control", "role:user"]


@pytest.mark.parametrize("role, groups, instrument, expected", [
    ("user", TEAM_WITH_RIGHT, "D11", True),  # a USER member holding INSTRUMENT_CONTROL on this proposal
    ("user", ["proposal:P-2026-011", "role:user"], "D11", False),  # bob: in the team, no right
    ("user", ["proposal:P-2026-042", "role:instrument_control"], "D11", False),  # the right, on another proposal
    ("user", ["instrument:D11", "role:staff"], "D11", True),  # D11's scientist
    ("user", ["instrument:IN5", "role:staff"], "D11", False),  # another instrument's scientist
    ("user", [], "D11", False),
    ("owner", [], "D11", True),  # the owner, support, admins: the gateway decides (a refusal shows)
    ("support", [], "D11", True),
])
def test_may_pilot_here(role, groups, instrument, expected):
    assert may_pilot_here({"name": "x", "groups": groups}, role, "P-2026-011", instrument) is expected


def test_the_panels_socket_drops_input_of_members_without_the_right(monkeypatch):
    monkeypatch.setenv("VISA_PROPOSAL", "P-2026-011")
    process = {"command": ["true"], "unix_socket": True, "raw_socket_proxy": True, "timeout": 5}
    [(_, cls, _kwargs)] = socket_routes("/user/alice/run/", {"instrument-d11": process})
    assert issubclass(cls, DesktopSocketMixin)
    assert cls.visa_may_input({"groups": ["proposal:P-2026-011", "role:user"]}, "user") is False
    assert cls.visa_may_input({"groups": TEAM_WITH_RIGHT}, "user") is True
    desktop, _ = desktop_socket_handler()
    assert desktop.visa_may_input is None  # the desktop itself: the room's level only
