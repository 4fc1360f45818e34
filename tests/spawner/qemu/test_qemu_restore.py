"""A real VM's disk archived, then restored from the owner's home page into a new VM through the hub:
the file the person wrote in the first VM's home is in the second one's.

The archive is made by `archives.archive_instance` (what `VisaSpawner.delete_forever` calls) on
the stopped VM: this hub deletes without archiving (hub_qemu_config.py), so only this test pays
for the flattening."""
from __future__ import annotations

import time
import uuid

import pytest

from tests.hubtools import run_code, wait_for
from tests.spawner.qemu.conftest import PROPOSAL, create_vm
from visa_spawner.archives import archive_instance, find_archive
from visa_spawner.backends.qemu.backend import QemuBackend, vm_name

pytestmark = [pytest.mark.qemu, pytest.mark.root]


async def test_an_archived_vm_disk_is_restored_into_a_new_vm(hub, hub_state, login, qemu_state, image_dir):
    alice = login("alice")
    first = create_vm(alice, "Archived VM")
    hub.wait_ready("alice", first, timeout=600)
    secret = uuid.uuid4().hex
    out = run_code(alice, "alice", first, f"import os\nopen(os.path.expanduser('~/kept.txt'), 'w').write({secret!r})\n"
                   "os.sync()\nprint('written')", timeout=120)
    assert "written" in out, out
    hub.stop_server("alice", first, timeout=120)

    t0 = time.monotonic()
    backend = QemuBackend(state_dir=str(qemu_state), image_dir=image_dir)
    archive = await archive_instance(
        backend, {"owner": "alice", "server_name": first}, archive_dir=str(hub_state / "archives"), owner="alice",
        server=first, display_name="Archived VM", options={"proposal": PROPOSAL, "plan": "vm"}, backend_name="qemu")
    flatten = time.monotonic() - t0
    hub.delete_server("alice", first, timeout=120)
    assert not (qemu_state / "instances" / vm_name("alice", first)).exists()

    home = alice.home().text
    assert f'data-archive-id="{archive.id}"' in home and 'name="restore" value="' + archive.id in home
    refused = alice.new_instance(name="Wrong plan", proposal=PROPOSAL, plan="sandbox-small", restore=archive.id)
    assert refused.status_code == 400 and "Choose a qemu plan" in refused.text

    t0 = time.monotonic()
    r = alice.new_instance(name="Restored VM", proposal=PROPOSAL, plan="vm", screen="1280x720", keyboard="fr",
                           restore=archive.id)
    assert r.status_code == 302, r.text[:500]
    restored = r.headers["location"].rsplit("/", 1)[1]
    try:
        model = hub.wait_ready("alice", restored, timeout=600)
        boot = time.monotonic() - t0
        assert model["user_options"]["restore"] == archive.id
        log = hub.log_path.read_text(errors="replace")
        assert f"alice:{restored}: Restoring the virtual machine's disk from its archive" in log
        out = run_code(alice, "alice", restored,
                       "import os\np = os.path.expanduser('~/kept.txt')\nprint(open(p).read(), os.stat(p).st_uid == os.getuid())",
                       timeout=120)
        assert out.split() == [secret, "True"], out
        assert find_archive(hub_state / "archives", "alice", archive.id) is not None, "the archive stays"
    finally:
        hub.delete_server("alice", restored, timeout=180)
    wait_for(lambda: not (qemu_state / "instances" / vm_name("alice", restored)).exists(), 30, "the restored disk gone")
    print(f"archive {archive.size / 2**20:.0f} MiB flattened in {flatten:.1f} s; restored VM ready in {boot:.1f} s")
