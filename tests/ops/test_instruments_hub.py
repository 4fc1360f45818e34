"""A real hub and sandbox: an instance of P-2026-011 (an experiment on D11) records D11 in its
user_options, its processes see VISA_INSTRUMENTS=D11, and the console's API finds it by instrument."""
from __future__ import annotations

import pytest

from tests.hubtools import run_code, unique
from tests.spawner.sandbox.test_instances import ALICE_PROPOSAL, create
from tests.support import wait_for

pytestmark = pytest.mark.root

CONSOLE_API = "/services/visa-ops/api/admin/instances"


def test_an_instance_carries_its_proposals_instruments_to_the_console_and_inside(hub, login):
    alice, admin = login("alice"), login("admin")
    server = create(alice, unique("Instruments"))
    try:
        model = hub.wait_ready("alice", server)
        assert model["user_options"]["instruments"] == ["D11"], model["user_options"]
        out = run_code(alice, "alice", server, "import os\nprint(repr(os.environ.get('VISA_INSTRUMENTS')))")
        assert out.strip() == "'D11'", out

        def listed() -> list[dict]:  # the console's listing is shared for up to 10 s: wait for the new one
            found = admin.s.get(f"{hub.url}{CONSOLE_API}", params={"instrument": "D11", "owner": "alice"}, timeout=30)
            assert found.status_code == 200, found.text[:300]
            return [i for i in found.json()["items"] if i["server"] == server]

        wait_for(listed, 30, f"{server} in the console's D11 listing")
        mine = listed()
        assert len(mine) == 1 and mine[0]["proposal"] == ALICE_PROPOSAL and mine[0]["instruments"] == ["D11"]
        other = admin.s.get(f"{hub.url}{CONSOLE_API}", params={"instrument": "IN5", "owner": "alice"}, timeout=30)
        assert other.status_code == 200 and server not in {i["server"] for i in other.json()["items"]}
        page = admin.s.get(f"{hub.url}/services/visa-ops/admin/instances", params={"instrument": "D11"}, timeout=30)
        assert page.status_code == 200 and server in page.text
        assert alice.s.get(f"{hub.url}{CONSOLE_API}", params={"instrument": "D11"}, timeout=30).status_code == 403
    finally:
        hub.delete_server("alice", server)
