"""The instrument windows' pure parts (no cloud): which servers are followed, and the decision taken
from the hub authenticator's catalogue, clock and margin (the lab test: test_instrument_window.py)."""
from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from traitlets.config import Config

from visa_authenticator.base import VisaAuthenticator
from visa_spawner.backends.openstack.instrument_windows import InstrumentWindows, running_servers
from visa_spawner.backends.openstack.security import SecurityGroups

CATALOGUE = Path(__file__).resolve().parents[3] / "hub_config" / "demo" / "catalogue.yaml"
RULE = {"protocol": "tcp", "port_range_min": 5076, "port_range_max": 5076, "remote_ip_prefix": "10.20.0.5/32"}


def test_running_servers_are_ready_active_openstack_records_with_instruments():
    cloud = {"h-alice-a": {"server_id": "1", "status": "ACTIVE"}, "h-alice-b": {"server_id": "2", "status": "SHELVED"},
             "h-alice-c": {"server_id": "3", "status": "ACTIVE"}, "h-bob-a": {"server_id": "4", "status": "ACTIVE"}}
    records = [("alice", "a", {"ready": True, "user_options": {"plan": "os", "proposal": "P-1", "instruments": ["D11"]}}),
               ("alice", "b", {"ready": True, "user_options": {"plan": "os", "proposal": "P-1", "instruments": ["D11"]}}),
               ("alice", "c", {"ready": True, "user_options": {"plan": "os", "proposal": "P-1", "instruments": []}}),
               ("bob", "a", {"ready": True, "pending": "stop", "user_options": {"plan": "os", "instruments": ["D11"]}}),
               ("bob", "b", {"ready": True, "user_options": {"plan": "os", "instruments": ["D11"]}}),  # no server
               ("alice", "q", {"ready": True, "user_options": {"plan": "qemu", "instruments": ["D11"]}})]
    found = running_servers(records, cloud, lambda owner, name: f"h-{owner}-{name}", {"os"})
    assert [(s.owner, s.proposal, s.instruments, s.server_id) for s in found] == [("alice", "P-1", ("D11",), "1")]


def security(instruments: dict) -> SecurityGroups:
    return SecurityGroups(None, [], logging.getLogger("test"), instrument_rules=instruments)  # no cloud call made


def authenticator(now: datetime, days: int = 7) -> VisaAuthenticator:
    c = Config()
    c.FileCatalogue.path = str(CATALOGUE)
    return VisaAuthenticator(config=c, clock=lambda: now, instrument_control_days=days, enable_auth_state=True)


@pytest.mark.asyncio
async def test_the_window_is_the_owners_per_instrument_from_the_hubs_catalogue():
    hub = authenticator(datetime(2026, 12, 3, 12, tzinfo=UTC))  # P-2026-011 on D11 ended 2026-11-26
    windows = InstrumentWindows.for_hub(security({"D11": [RULE], "IN5": [RULE]}), hub)
    assert windows is not None and windows.today() == date(2026, 12, 3)
    assert await windows.window_open("alice", "P-2026-011", "D11", windows.today())  # its last day
    assert not await windows.window_open("alice", "P-2026-011", "D11", date(2026, 12, 4))
    assert not await windows.window_open("alice", "P-2026-011", "IN5", windows.today())  # not on IN5
    assert not await windows.window_open("bob", "P-2026-011", "D11", windows.today())  # no INSTRUMENT_CONTROL
    assert not await windows.window_open("alice", "", "D11", windows.today())  # no proposal
    assert not await windows.window_open("nobody", "P-2026-011", "D11", windows.today())
    narrow = InstrumentWindows.for_hub(security({"D11": [RULE]}), authenticator(datetime(2026, 12, 3, tzinfo=UTC), 2))
    assert not await narrow.window_open("alice", "P-2026-011", "D11", narrow.today())  # the hub's margin


def test_nothing_is_followed_without_groups_or_a_catalogue():
    hub = authenticator(datetime(2026, 11, 24, tzinfo=UTC))
    assert InstrumentWindows.for_hub(security({}), hub) is None
    assert InstrumentWindows.for_hub(security({"D11": [RULE]}), None) is None  # a hub without VisaAuthenticator
