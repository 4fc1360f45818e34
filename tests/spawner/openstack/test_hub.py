"""Through a real hub: spawn on the lab cloud, use the instance, stop; hub killed mid-burst."""
from __future__ import annotations

import pytest
import requests

from tests.hubtools import Browserless
from tests.spawner.openstack import lab
from tests.spawner.openstack.boot_emulator import BootEmulator, wait_until
from tests.spawner.openstack.hubrun import LatencyProbe, make_hub, progress_events, spawn
from tests.spawner.openstack.support import new_hub_id
from visa_spawner.backends.openstack.model import hub_tag

pytestmark = [pytest.mark.openstack, pytest.mark.root]


def test_spawn_use_stop_with_real_jupyter(openstack_lab, lab_admin):
    hub_id = new_hub_id()
    hub = make_hub(hub_id).start()
    emulator = BootEmulator(lambda: lab.connect("lab"), hub_tag(hub_id), mode="real", boot_delay=1).start()
    try:
        alice = Browserless(hub, "alice", "alice-demo")
        assert alice.logged_in
        r = alice.new_instance(name="Cloud VM", proposal="P-2026-011", plan="openstack-small",
                               screen="1280x720", keyboard="fr")
        assert r.status_code == 302, r.text[:300]
        server = r.headers["location"].rsplit("/", 1)[1]
        events = progress_events(hub, "alice", server)
        messages = [e.get("message", "") for e in events]
        assert events[-1].get("ready"), (messages, hub.log_tail(30), emulator.errors)
        for expected in ("Requesting a server", "ACTIVE", "booted and started VISA", "Your account exists",
                         "Jupyter is up"):
            assert any(expected in m for m in messages), (expected, messages)
        lab_page = alice.instance_get("alice", server, "lab")
        assert lab_page.status_code == 200 and "JupyterLab" in lab_page.text
        contents = alice.instance_api("GET", "alice", server, "api/contents")
        assert contents.status_code == 200, contents.text[:300]
        servers = lab.servers_with_tag(lab_admin, hub_tag(hub_id))
        assert len(servers) == 1 and servers[0].metadata["visa-owner"] == "alice"
        hub.stop_server("alice", server, timeout=120)
        assert not lab.servers_with_tag(lab_admin, hub_tag(hub_id))
        wait_until(lambda: emulator.running() == 0, 30, "the emulated instance to halt")
    finally:
        emulator.stop()
        hub.stop()
        lab.delete_all(lab_admin, hub_tag(hub_id))


def _servers(hub, user):
    servers = (hub.api("GET", f"/users/{user}?include_stopped_servers=1").json() or {}).get("servers", {})
    return {name: model for name, model in servers.items() if name}


def test_hub_killed_during_50_spawns_leaves_no_orphan(openstack_lab, lab_admin):
    """SIGKILL the hub mid-burst, restart it: each instance is running and reachable or cleanly
    stopped, and the reconciler deletes every server no record owns."""
    hub_id, names = new_hub_id(), [f"burst-{i}" for i in range(50)]
    hub = make_hub(hub_id, interval=2, grace=3).start()
    emulator = BootEmulator(lambda: lab.connect("lab"), hub_tag(hub_id), mode="standin", boot_delay=2).start()
    try:
        assert Browserless(hub, "admin", "admin-demo").logged_in  # entitlements in auth_state
        with LatencyProbe(hub) as probe:
            for name in names:
                assert spawn(hub, "admin", name).status_code in (201, 202)
            wait_until(lambda: sum(bool(m.get("ready")) for m in _servers(hub, "admin").values()) >= 10, 240,
                       "10 instances ready")
        hub.stop(sig=9)
        in_cloud = {s.name for s in lab.servers_with_tag(lab_admin, hub_tag(hub_id))}
        print(f"\nhub API during the burst: p50 {probe.median() * 1000:.0f} ms, "
              f"p99 {probe.quantile(0.99) * 1000:.0f} ms ({len(probe.samples)} samples); "
              f"{len(in_cloud)} servers in the cloud at the kill")
        assert probe.quantile(0.99) < 2.0, "the hub's API stalled during the burst"

        hub.start()
        wait_until(lambda: not any(m.get("pending") for m in _servers(hub, "admin").values()), 120,
                   "no spawn pending after the restart")
        from visa_spawner.backends.openstack.model import server_name

        def consistent():
            ready = {n for n, m in _servers(hub, "admin").items() if m.get("ready")}
            cloud = {s.name for s in lab.servers_with_tag(lab_admin, hub_tag(hub_id))}
            return ready if cloud == {server_name(hub_id, "admin", n) for n in ready} else None

        ready = wait_until(consistent, 120, "cloud servers == ready records (reconciler)")
        assert ready, "nothing survived the restart"
        stopped = [n for n, m in _servers(hub, "admin").items() if not m.get("ready")]
        assert len(ready) + len(stopped) == 50
        for name in ready:
            r = requests.get(f"{hub.url}/user/admin/{name}/api/status", timeout=10,
                             headers={"Authorization": f"token {hub.token}"})
            assert r.status_code == 200, (name, r.status_code)
        metrics = requests.get(f"{hub.url}/hub/metrics", headers={"Authorization": f"token {hub.token}"},
                               timeout=10)
        assert metrics.status_code == 200, metrics.status_code
        deleted = float(next(line.split()[-1] for line in metrics.text.splitlines()
                             if line.startswith("visa_openstack_orphans_deleted_total ")))
        print(f"after restart: {len(ready)} running and reachable, {len(stopped)} stopped, "
              f"{deleted:g} orphans deleted by the reconciler")
        # the restarted hub has no state for the spawns it lost: the reconciler deletes their
        # servers (a few may also go through the restarted hub's own stop of a not-ready record),
        # and it never deletes more than the servers no ready record owns
        assert 0 < deleted <= len(in_cloud) - len(ready), (deleted, len(in_cloud), len(ready))
    finally:
        emulator.stop()
        hub.stop()
        lab.delete_all(lab_admin, hub_tag(hub_id))


def test_a_shelved_server_starts_again_with_its_files(openstack_lab, lab_admin):
    """stop_action=shelve: stop shelves the server, start unshelves the same one (no rebuild), the
    instance fetches this start's config (new token) with its resume key, the person's files are
    still there; the reconciler leaves a shelved server of a stopped instance alone."""
    hub_id = new_hub_id()
    tag = hub_tag(hub_id)
    hub = make_hub(hub_id, stop_action="shelve", interval=2, grace=0).start()
    emulator = BootEmulator(lambda: lab.connect("lab"), tag, mode="real", boot_delay=1).start()
    try:
        alice = Browserless(hub, "alice", "alice-demo")
        r = alice.new_instance(name="Shelved VM", proposal="P-2026-011", plan="openstack-small",
                               screen="1280x720", keyboard="us")
        assert r.status_code == 302, r.text[:300]
        server = r.headers["location"].rsplit("/", 1)[1]
        assert progress_events(hub, "alice", server)[-1].get("ready"), (hub.log_tail(30), emulator.errors)
        put = alice.instance_api("PUT", "alice", server, "api/contents/home/alice/notes.txt",  # root_dir is /
                                 json={"type": "file", "format": "text", "content": "kept across shelving"})
        assert put.status_code in (200, 201), put.text[:300]
        [first] = lab.servers_with_tag(lab_admin, tag)
        assert "visa-resume" in first.metadata and "resume_key" not in str(first.metadata)

        hub.stop_server("alice", server, timeout=180)
        [shelved] = lab.servers_with_tag(lab_admin, tag)
        assert shelved.id == first.id and shelved.status.startswith("SHELVED"), shelved.status
        wait_until(lambda: emulator.running() == 0, 30, "the emulated instance to halt")
        cycles = hub.log_path.read_text().count("Reconciler: ")
        wait_until(lambda: hub.log_path.read_text().count("Reconciler: ") >= cycles + 2, 60, "two reconciler cycles")
        assert [s.id for s in lab.servers_with_tag(lab_admin, tag)] == [first.id], "the reconciler deleted it"
        wrong = requests.post(f"{hub.url}/hub/api/visa/resume", timeout=10,
                              headers={"Authorization": "visa-resume " + "x" * 43})
        assert wrong.status_code == 404

        r = spawn(hub, "alice", server, proposal="P-2026-011")
        assert r.status_code in (201, 202), r.text[:300]
        events = progress_events(hub, "alice", server)
        messages = [e.get("message", "") for e in events]
        assert events[-1].get("ready"), (messages, hub.log_tail(40), emulator.errors)
        assert any("shelved server again" in m for m in messages), messages
        [again] = lab.servers_with_tag(lab_admin, tag)
        assert again.id == first.id and again.status == "ACTIVE"
        # the browser's cookies of the server's first run are refused: a page load logs in again
        assert alice.instance_get("alice", server, "lab").status_code == 200
        notes = alice.instance_api("GET", "alice", server, "api/contents/home/alice/notes.txt")
        assert notes.status_code == 200 and notes.json()["content"] == "kept across shelving", notes.text[:300]

        hub.delete_server("alice", server, timeout=180)
        wait_until(lambda: not lab.servers_with_tag(lab_admin, tag), 120, "the server deleted with the instance")
    finally:
        emulator.stop()
        hub.stop()
        lab.delete_all(lab_admin, tag)
