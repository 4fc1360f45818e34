"""Warm pools on the lab cloud, through a real hub: servers built ahead, adopted by two participants,
refilled, drained. The hub runs `CourseHookOpenStack` (a server `course-<pool>` adopts from pool
`<pool>`); the boot emulator's stand-ins wait for their config as the start script does."""
from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.hubtools import Browserless
from tests.spawner.openstack import lab
from tests.spawner.openstack.boot_emulator import BootEmulator, wait_until
from tests.spawner.openstack.hubrun import make_hub, progress_events
from tests.spawner.openstack.support import new_hub_id
from visa_spawner.backends.guest import cloudinit
from visa_spawner.backends.openstack.model import hub_tag, server_name

pytestmark = [pytest.mark.openstack, pytest.mark.root]

CONFIG = Path(__file__).with_name("pool_hub_config.py")
BODY = {"plan": "openstack-small", "proposal": "P-2021-007", "materials": ""}


def pool_status(hub, name: str) -> dict:
    return hub.api("GET", f"/visa/pools/{name}").json()


def wait_pool_full(hub, name: str, size: int, timeout: float = 120) -> dict:
    return wait_until(lambda: (lambda s: s if s.get("ready") == size and not s.get("starting") else None)(
        pool_status(hub, name)), timeout, f"pool {name} with {size} ready")


def instance_config(server) -> dict:
    doc = cloudinit.parse_cloud_config(base64.b64decode(server.user_data).decode())
    return json.loads(next(f["content"] for f in doc["write_files"] if f["path"] == cloudinit.CONFIG_PATH))


def start_course_instance(hub, user: str) -> float:
    """Seconds from the start request to the spawn's ready event."""
    t0 = time.monotonic()
    r = hub.api("POST", f"/users/{user}/servers/course-room",
                json={"plan": "openstack-small", "proposal": "P-2021-007", "screen": "1280x720", "keyboard": "us"})
    assert r.status_code in (201, 202), r.text[:300]
    events = progress_events(hub, user, "course-room")
    assert events[-1].get("ready"), (user, events, hub.log_tail(40))
    assert any("built ahead" in e.get("message", "") for e in events), events
    return time.monotonic() - t0


@contextlib.contextmanager
def pool_hub(lab_admin) -> Iterator[tuple]:
    """(hub, emulator, hub id, tag): a hub with pools on the lab cloud, its servers booted by
    stand-ins; everything of that hub deleted after."""
    hub_id = new_hub_id()
    tag = hub_tag(hub_id)
    # grace 0: the reconciler would delete at once any server it does not know is the pool's
    hub = make_hub(hub_id, config=CONFIG, interval=2, grace=0).start()
    emulator = BootEmulator(lambda: lab.connect("lab"), tag, mode="standin", boot_delay=1).start()
    try:
        yield hub, emulator, hub_id, tag
        assert not emulator.errors, emulator.errors
    finally:
        emulator.stop()
        hub.stop()
        lab.delete_all(lab_admin, tag)


def test_pool_fill_adoption_refill_and_drain(openstack_lab, lab_admin):
    with pool_hub(lab_admin) as (hub, emulator, hub_id, tag):
        assert hub.api("PUT", "/visa/pools/room", json={**BODY, "plan": "vm", "size": 1}).status_code == 400
        r = hub.api("PUT", "/visa/pools/room", json={**BODY, "size": 2})
        assert r.status_code == 200, r.text
        assert r.json()["plan"] == "openstack-small" and r.json()["size"] == 2
        wait_pool_full(hub, "room", 2)
        pooled = {s.id: s for s in lab.servers_with_tag(lab_admin, tag)}
        assert len(pooled) == 2
        for s in pooled.values():  # nobody's: no owner in the metadata, no token in the user-data
            assert s.metadata.get("visa-pool") == "room" and not s.metadata.get("visa-owner")
            assert set(instance_config(s)) == {"version", "pooled", "pool_wait", "resume_key", "phone_home_url"}
        cycles = hub.log_path.read_text().count("Reconciler: ")
        wait_until(lambda: hub.log_path.read_text().count("Reconciler: ") >= cycles + 2, 60, "two reconciler cycles")
        assert set(pooled) == {s.id for s in lab.servers_with_tag(lab_admin, tag)}, "the reconciler deleted one"

        for user in ("alice", "bob"):
            assert Browserless(hub, user, f"{user}-demo").logged_in
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            seconds = dict(zip(("alice", "bob"), ex.map(lambda u: start_course_instance(hub, u), ("alice", "bob")), strict=True))
        assert max(seconds.values()) < 15, seconds
        servers = {s.id: s for s in lab.servers_with_tag(lab_admin, tag)}
        adopted = {}
        for user in ("alice", "bob"):
            [s] = [s for s in servers.values() if s.metadata.get("visa-owner") == user]
            assert s.id in pooled and s.name == server_name(hub_id, user, "course-room")
            assert "visa-pool" not in s.metadata and s.metadata["visa-server"] == "course-room"
            adopted[user] = s.id
            config = emulator.adopted[s.id]  # what the server was given: its adopter's own token
            token = config["env"]["JUPYTERHUB_API_TOKEN"]
            me = requests.get(f"{hub.url}/hub/api/user", headers={"Authorization": f"token {token}"}, timeout=10)
            assert me.status_code == 200 and me.json()["name"] == user, me.text[:200]
            assert config["owner"] == user and config["server_name"] == "course-room"
            page = requests.get(f"{hub.url}/user/{user}/course-room/api/status", timeout=10,
                                headers={"Authorization": f"token {hub.token}"})
            assert page.status_code == 200, page.status_code
        assert adopted["alice"] != adopted["bob"]
        assert emulator.adopted[adopted["alice"]]["env"]["JUPYTERHUB_API_TOKEN"] != \
            emulator.adopted[adopted["bob"]]["env"]["JUPYTERHUB_API_TOKEN"]

        wait_pool_full(hub, "room", 2)  # refilled with new servers
        refill = {s.id for s in lab.servers_with_tag(lab_admin, tag) if s.metadata.get("visa-pool") == "room"}
        assert len(refill) == 2 and not refill & set(pooled)

        hub.stop_server("alice", "course-room", timeout=120)
        assert hub.api("DELETE", "/visa/pools/room").status_code == 204
        assert hub.api("GET", "/visa/pools/room").status_code == 404
        # drained: its servers are deleted (Nova may list one a moment longer: seen once in CI)
        wait_until(lambda: [s.id for s in lab.servers_with_tag(lab_admin, tag)] == [adopted["bob"]], 60,
                   "only bob's server left once the pool is drained")
        hub.delete_server("bob", "course-room", timeout=120)
        wait_until(lambda: not lab.servers_with_tag(lab_admin, tag), 120, "every server of the hub deleted")
