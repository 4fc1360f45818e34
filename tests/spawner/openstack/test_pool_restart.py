"""A hub restart in the middle of a course: the pool's servers, still booted and asking with their
keys, are spared by the new hub's reconciler and taken back when the pool is put again (no new
server built); the surplus is deleted; a participant then adopts one of them."""
from __future__ import annotations

import pytest

from tests.hubtools import Browserless
from tests.spawner.openstack import lab
from tests.spawner.openstack.boot_emulator import wait_until
from tests.spawner.openstack.test_pool import BODY, pool_hub, start_course_instance, wait_pool_full

pytestmark = [pytest.mark.openstack, pytest.mark.root]


def pooled_ids(lab_admin, tag: str) -> set[str]:
    return {s.id for s in lab.servers_with_tag(lab_admin, tag) if s.metadata.get("visa-pool") == "room"}


def test_a_restarted_hub_takes_back_the_pools_servers(openstack_lab, lab_admin):
    # the hub's reconciler has grace 0: without the pool's grace, the new hub's first cycle would
    # delete the previous hub's pooled servers
    with pool_hub(lab_admin) as (hub, emulator, _, tag):
        assert hub.api("PUT", "/visa/pools/room", json={**BODY, "size": 2}).status_code == 200
        wait_pool_full(hub, "room", 2)
        built = pooled_ids(lab_admin, tag)
        assert len(built) == 2

        hub.stop()
        hub.start()
        assert hub.api("GET", "/visa/pools/room").status_code == 404, "the definition is the hub's memory"
        cycles = hub.log_path.read_text().count("Reconciler: ")
        wait_until(lambda: hub.log_path.read_text().count("Reconciler: ") >= cycles + 2, 60, "two reconciler cycles")
        assert pooled_ids(lab_admin, tag) == built, "the new hub's reconciler deleted a pooled server"

        assert hub.api("PUT", "/visa/pools/room", json={**BODY, "size": 1}).status_code == 200
        wait_pool_full(hub, "room", 1, timeout=60)
        wait_until(lambda: len(pooled_ids(lab_admin, tag)) == 1, 120, "the surplus server deleted")
        [kept] = pooled_ids(lab_admin, tag)
        assert kept in built, "a new server was built instead of taking one back"
        wait_until(lambda: "Warm pool 'room': 1 of 2 server(s) of a previous hub taken back" in
                   hub.log_path.read_text(), 30, "the pool's report of what it took back")

        assert Browserless(hub, "alice", "alice-demo").logged_in
        assert start_course_instance(hub, "alice") < 15
        [adopted] = [s for s in lab.servers_with_tag(lab_admin, tag) if s.metadata.get("visa-owner") == "alice"]
        assert adopted.id == kept and emulator.adopted[kept]["owner"] == "alice"
        assert hub.api("DELETE", "/visa/pools/room").status_code == 204
        hub.delete_server("alice", "course-room", timeout=120)
        wait_until(lambda: not lab.servers_with_tag(lab_admin, tag), 120, "every server of the hub deleted")
