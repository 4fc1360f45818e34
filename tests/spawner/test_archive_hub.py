"""A real hub and sandboxes: deleting an instance archives its home; its owner alone downloads
it from the home page, and restores it into a new instance of the same proposal."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tarfile
import uuid

import pytest

from tests.hubtools import run_code, unique
from tests.spawner.sandbox.test_instances import ALICE_PROPOSAL, create
from tests.support import wait_for
from visa_spawner.backends.sandbox.command import account_name

pytestmark = pytest.mark.root


def only_archive(hub_state, owner: str, before: set[str]) -> tuple[str, dict]:
    directory = hub_state / "archives" / owner
    new = {p.name for p in directory.glob("*.json")} - before
    assert len(new) == 1, new
    name = new.pop()
    return name.removesuffix(".json"), json.loads((directory / name).read_text())


def test_a_deleted_home_is_archived_downloaded_by_its_owner_only_and_restored(hub, hub_state, login):
    alice, bob = login("alice"), login("bob")
    server = create(alice, unique("Archive me"))
    hub.wait_ready("alice", server)
    secret = uuid.uuid4().hex
    out = run_code(alice, "alice", server,
                   f"import os\nopen(os.path.expanduser('~/results.txt'), 'w').write({secret!r})\nprint('written')")
    assert "written" in out, out
    archives = hub_state / "archives" / "alice"
    before = {p.name for p in archives.glob("*.json")} if archives.exists() else set()

    hub.delete_server("alice", server)  # DELETE /hub/api/users/alice/servers/<server> {"remove": true}

    ident, sidecar = only_archive(hub_state, "alice", before)
    path = archives / sidecar["file"]
    assert sidecar["file"] == f"{ident}.tar.gz" and ident.startswith(f"{server}-")
    assert {k: sidecar[k] for k in ("owner", "server", "proposal", "plan", "backend")} == {
        "owner": "alice", "server": server, "proposal": ALICE_PROPOSAL, "plan": "sandbox-small", "backend": "sandbox"}
    info = path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == 0 and sidecar["size"] == info.st_size
    with tarfile.open(path) as tar:
        assert tar.extractfile("./results.txt").read().decode() == secret

    # the home page lists it with a download link and a restore form; nobody else's page does
    home = alice.home().text
    assert f'data-archive-id="{ident}"' in home and f"/hub/visa/archives/alice/{ident}" in home
    assert ident not in bob.home().text
    assert "visa-ops-banner" in home and "banner?owner=alice" in home

    url = f"{hub.url}/hub/visa/archives/alice/{ident}"
    download = alice.s.get(url, timeout=30)
    assert download.status_code == 200, download.text[:300]
    assert download.content == path.read_bytes()
    assert download.headers["Content-Disposition"] == f'attachment; filename="{ident}.tar.gz"'
    assert bob.s.get(url, timeout=30).status_code == 403
    assert bob.s.get(f"{hub.url}/hub/visa/archives/bob/{ident}", timeout=30).status_code == 404
    for unknown in (f"{server}-20000101T000000Z", "..%2F..%2Fjupyterhub_cookie_secret", sidecar["file"]):
        r = alice.s.get(f"{hub.url}/hub/visa/archives/alice/{unknown}", timeout=30)
        assert r.status_code == 404, (unknown, r.status_code)
        assert "Traceback" not in r.text

    # another person cannot restore it: a clear 400 on the form, no instance
    refused = bob.new_instance(name=unique("Steal"), proposal=ALICE_PROPOSAL, plan="sandbox-small", restore=ident)
    assert refused.status_code == 400 and "not one of yours" in refused.text
    refused = alice.new_instance(name=unique("Other"), proposal="P-2021-007", plan="sandbox-small", restore=ident)
    assert refused.status_code == 400 and f"belongs to proposal {ALICE_PROPOSAL}" in refused.text

    restored = create(alice, unique("Restored"), restore=ident)
    model = hub.wait_ready("alice", restored)
    assert model["user_options"]["restore"] == ident
    out = run_code(alice, "alice", restored,
                   "import os\np = os.path.expanduser('~/results.txt')\n"
                   "print(open(p).read(), os.stat(p).st_uid == os.getuid())")
    assert out.split() == [secret, "True"], out
    assert os.path.exists(path)  # a restore copies; the archive stays until its retention ends


def test_when_the_archive_fails_the_home_is_kept_and_jupyterhub_forgets_the_record(hub, hub_state, login):
    """What JupyterHub 6.1.1 does when delete_forever raises: it logs the error ("Error cleaning up
    persistent resources"), answers 204 and removes the server record anyway. The instance's data
    stays on the host (nothing lost), but the refusal cannot reach the caller: a sweep must not
    ask to delete instances of a backend that cannot archive (`archives.can_archive`)."""
    carol = login("carol")
    server = create(carol, unique("Unarchivable"), proposal="P-2026-042")
    hub.wait_ready("carol", server)
    run_code(carol, "carol", server, "import os\nopen(os.path.expanduser('~/kept.txt'), 'w').write('kept')")
    blocker = hub_state / "archives" / "carol"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    aside = blocker.with_name(f"carol.{unique('aside')}")  # carol's archives from earlier tests of the session
    if blocker.exists():
        blocker.rename(aside)
    blocker.write_text("a file where carol's archive directory should be: archiving fails")
    try:
        r = hub.api("DELETE", f"/users/carol/servers/{server}", json={"remove": True})
        assert r.status_code in (202, 204), r.text
        wait_for(lambda: hub.server_model("carol", server) is None, 60, "the record removed by JupyterHub")
        wait_for(lambda: "NOT deleted, its data is kept" in hub.log_tail(400), 30, "the spawner's refusal logged")
        home = hub_state / "sandbox" / "homes" / account_name("carol", server, "visa-")
        assert (home / "kept.txt").read_text() == "kept"
    finally:
        blocker.unlink()
        if aside.exists():
            aside.rename(blocker)
        shutil.rmtree(hub_state / "sandbox" / "homes" / account_name("carol", server, "visa-"), ignore_errors=True)
        subprocess.run(["userdel", account_name("carol", server, "visa-")], capture_output=True)  # the orphan
