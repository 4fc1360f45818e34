"""Through a real hub and the real visa-ops service: the sweep deletes an expired OpenStack
instance after its server was archived as a snapshot image, then prunes that archive past its
retention through the hub, which deletes the image (only the hub holds the cloud's credentials)."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.hubtools import DEMO_CONFIG, Browserless, Hub, make_demo_data, make_state_dir, wait_for
from tests.spawner.openstack import lab
from tests.spawner.openstack.boot_emulator import BootEmulator
from tests.spawner.openstack.hubrun import openstack_settings, progress_events, spawn
from tests.spawner.openstack.support import new_hub_id
from visa_spawner.backends.openstack.model import hub_tag

pytestmark = [pytest.mark.openstack, pytest.mark.root]

CONFIG = Path(__file__).resolve().parent / "archive_hub_config.py"
DAY = 86400


def audit(state: Path, owner: str) -> list[dict]:
    with sqlite3.connect(state / "visa_ops.sqlite") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM visa_ops_audit WHERE owner = ? ORDER BY id", (owner,))]


def archive_images(admin, owner: str) -> list:
    return [i for i in admin.image.images() if str((i.properties or {}).get("visa-archive", "")).startswith(owner + "/")]


def clean_up(emulator, hub, lab_admin, hub_id: str, state) -> None:
    """Whatever a test left: the emulator, the hub, its servers and alice's archive images, the state."""
    emulator.stop()
    hub.stop()
    lab.delete_all(lab_admin, hub_tag(hub_id))
    for image in archive_images(lab_admin, "alice"):
        lab_admin.image.delete_image(image.id)
    shutil.rmtree(state, ignore_errors=True)


def test_sweep_archives_an_expired_openstack_instance_then_prunes_its_image(openstack_lab, lab_admin):
    hub_id = new_hub_id()
    state = make_state_dir("visahub-os-archive-")
    make_demo_data(DEMO_CONFIG.parent / "catalogue.yaml", state / "data")
    hub = Hub(state, config=CONFIG, extra_env={
        "VISA_TEST_OPENSTACK": json.dumps(openstack_settings(hub_id, stop_action="shelve")),
        # 15 days ahead: past the 14-day lifetime; retention 10 days: the new archive is already past it
        "VISA_OPS_CLOCK_OFFSET": str(15 * DAY), "VISA_OPS_SWEEP_INTERVAL": "1",
        "VISA_OPS_POLICY": json.dumps({"minimum_notice_hours": 0.01}),  # deleted 36 s after the warning
        "VISA_TEST_ARCHIVE_RETENTION_DAYS": "10",
    }).start()
    emulator = BootEmulator(lambda: lab.connect("lab"), hub_tag(hub_id), mode="standin").start()
    try:
        assert Browserless(hub, "alice", "alice-demo").logged_in  # the hub knows alice from her first login
        r = spawn(hub, "alice", "old-vm", proposal="P-2026-011")
        assert r.status_code in (201, 202), r.text[:300]
        events = progress_events(hub, "alice", "old-vm")
        assert events[-1].get("ready"), (events, hub.log_tail(30))
        server_id = lab.servers_with_tag(lab_admin, hub_tag(hub_id))[0].id

        wait_for(lambda: hub.server_model("alice", "old-vm") is None, 240,
                 f"alice/old-vm deleted by the sweep (log: {hub.log_path})")
        kinds = [(r["action"], r["outcome"]) for r in audit(state, "alice")]
        assert ("warn", "ok") in kinds and ("delete", "ok") in kinds, kinds
        log = hub.log_path.read_text()
        made = re.search(r"old-vm: archived to (old-vm-\d{8}T\d{6}Z)\.raw \((\d+) bytes\) before deletion", log)
        assert made and int(made.group(2)) > 3 << 20, log[-3000:]
        assert not lab.servers_with_tag(lab_admin, hub_tag(hub_id))  # the server went after its archive

        # next sweeps: the archive is past retention; the hub deletes the image, then the sidecar
        wait_for(lambda: ("prune", "ok") in [(r["action"], r["outcome"]) for r in audit(state, "alice")], 60,
                 f"the archive pruned (log: {hub.log_path})")
        prune = [r for r in audit(state, "alice") if r["action"] == "prune"][0]
        assert json.loads(prune["detail"])["files"] == [f"visa-archive-{made.group(1)}"], prune
        log = hub.log_path.read_text()
        left = archive_images(lab_admin, "alice")
        assert not left, ([(i.name, i.status, i.created_at) for i in left], log[-4000:])
        assert not list((state / "archives" / "alice").glob("*.json"))
        assert server_id not in {s.id for s in lab.servers_with_tag(lab_admin, hub_tag(hub_id))}
    finally:
        clean_up(emulator, hub, lab_admin, hub_id, state)


def test_owner_downloads_and_restores_a_snapshot_archive_through_the_hub(openstack_lab, lab_admin):
    """Deleted for good through the hub's API: the owner's home page lists the archive; its download
    streams Glance's bytes; a new instance restoring it boots from the snapshot image."""
    hub_id = new_hub_id()
    state = make_state_dir("visahub-os-archive-")
    make_demo_data(DEMO_CONFIG.parent / "catalogue.yaml", state / "data")
    hub = Hub(state, config=CONFIG, extra_env={
        "VISA_TEST_OPENSTACK": json.dumps(openstack_settings(hub_id, stop_action="shelve"))}).start()
    emulator = BootEmulator(lambda: lab.connect("lab"), hub_tag(hub_id), mode="standin").start()
    try:
        alice = Browserless(hub, "alice", "alice-demo")
        r = alice.new_instance(name="Cloud VM", proposal="P-2026-011", plan="openstack-small",
                               screen="1280x720", keyboard="us")
        assert r.status_code == 302, r.text[:300]
        server = r.headers["location"].rsplit("/", 1)[1]
        assert progress_events(hub, "alice", server)[-1].get("ready"), hub.log_tail(30)
        old_id = lab.servers_with_tag(lab_admin, hub_tag(hub_id))[0].id
        r = hub.api("DELETE", f"/users/alice/servers/{server}", json={"remove": True})
        assert r.status_code in (202, 204), r.text[:300]
        wait_for(lambda: hub.server_model("alice", server) is None and not lab.servers_with_tag(
            lab_admin, hub_tag(hub_id)), 180, f"alice/{server} archived and deleted (log: {hub.log_path})")
        [image] = archive_images(lab_admin, "alice")
        archive = image.properties["visa-archive"].split("/", 1)[1]
        assert archive in alice.home().text

        with alice.s.get(f"{hub.url}/hub/visa/archives/alice/{archive}", stream=True, timeout=60) as r:
            assert r.status_code == 200, r.text[:300]
            assert r.headers["Content-Disposition"] == f'attachment; filename="{archive}.raw"'
            digest, size = hashlib.sha512(), 0
            for chunk in r.iter_content(1 << 16):
                digest.update(chunk)
                size += len(chunk)
        assert size == image.size == int(r.headers["Content-Length"]) and digest.hexdigest() == image.hash_value
        bob = Browserless(hub, "bob", "bob-demo")
        assert bob.s.get(f"{hub.url}/hub/visa/archives/alice/{archive}", timeout=10).status_code == 403

        r = alice.new_instance(name="Restored", proposal="P-2026-011", plan="openstack-small",
                               screen="1280x720", keyboard="us", restore=archive)
        assert r.status_code == 302, r.text[:300]
        restored = r.headers["location"].rsplit("/", 1)[1]
        assert progress_events(hub, "alice", restored)[-1].get("ready"), hub.log_tail(30)
        [new] = lab.servers_with_tag(lab_admin, hub_tag(hub_id))
        assert new.id != old_id and new.image["id"] == image.id
    finally:
        clean_up(emulator, hub, lab_admin, hub_id, state)
