"""One real VM through a real hub: Lab answers, the proposal's data is there and read-only, the
desktop connects in Chromium, collaboration works (presence, an access request granted, the
audit), a hub restart keeps the VM, stop leaves no QEMU process and delete no disk."""
from __future__ import annotations

import json
import os
import time

import pytest

from tests.browser import chromium, open_vm_desktop
from tests.collab.helpers import Person
from tests.hubtools import run_code, wait_for
from tests.spawner.qemu.conftest import PROPOSAL, create_vm, qemu_pids
from visa_spawner.backends.qemu.backend import vm_name

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.browser]

INSIDE = """
import getpass, json, os, socket, subprocess
d = "/data/%s"
try:
    open(d + "/written-by-vm", "w")
    write = "succeeded"
except OSError as e:
    write = e.strerror
procs = set()
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            procs.add(open(f"/proc/{p}/comm").read().strip())
        except OSError:
            pass
print(json.dumps({"user": getpass.getuser(), "files": sorted(os.listdir(d)), "write": write,
                  "vendor": open("/sys/class/dmi/id/sys_vendor").read().strip(),
                  "procs": sorted(procs), "hostname": socket.gethostname()}))
""" % PROPOSAL


def collaboration_on_the_vm(hub, name: str) -> None:
    """The VM reaches the collaboration service through the hub's relay (issue 16, item 5): its
    presence reports, its room long-poll (a pending request, then the grant) and its audit."""
    t0 = time.monotonic()
    alice, erin = Person(hub, "alice"), Person(hub, "erin")

    def alice_on_the_desktop():  # reported by the VM itself (POST …/presence through the relay)
        presence = alice.collab("GET", f"instances/alice/{name}").json()["presence"]
        return any(p["user"] == "alice" and p["channel"] == "desktop" for p in presence)

    wait_for(alice_on_the_desktop, 90, "the VM's presence report (alice on the desktop)", interval=1)
    def owner_connected_for_support() -> bool:  # her desktop page's event stream, as support sees it
        return next(i for i in erin.collab("GET", "support-instances").json() if i["server"] == name)["owner_connected"]

    wait_for(owner_connected_for_support, 30, "support staff seeing the owner connected")
    request = erin.collab("POST", f"instances/alice/{name}/requests").json()
    assert request["status"] == "pending", request  # SUPPORT asks: the owner is there
    wait_for(lambda: alice.instance_call("GET", "alice", name, "visa/api/room").json()["pending_requests"] == 1,
             60, "the VM learning of the pending request (its room long-poll through the relay)", interval=1)
    decision = alice.collab("POST", f"requests/{request['id']}/decision", {"decision": "full"}).json()
    assert decision["status"] == "full", decision
    r = erin.open_instance("alice", name, "lab")
    assert r.status_code == 200 and "JupyterLab" in r.text, (r.status_code, r.url)

    def erin_audited():
        return [a for a in alice.collab("GET", f"instances/alice/{name}/audit").json()
                if a["member"] == "erin" and a["source"] == "instance" and a["action"] == "connect"]

    (entry, *_) = wait_for(erin_audited, 60, "the VM's audit entry for erin's connection", interval=1)
    assert entry["role"] == "support" and entry["detail"].get("channel") == "lab" and entry["granted_by"] == "alice", entry
    print(f"collaboration on the VM: {time.monotonic() - t0:.1f} s")


def test_vm_lab_data_desktop_restart_stop_delete(hub, hub_state, login, qemu_state, artifacts):
    alice = login("alice")
    t0 = time.monotonic()
    name = create_vm(alice, "Cold VM")
    hub.wait_ready("alice", name, timeout=420)
    boot = time.monotonic() - t0
    log = hub.log_path.read_text(errors="replace")
    for stage in ("QEMU started", "boot agent started", "Jupyter answers"):
        assert stage in log, f"no progress stage {stage!r} in the hub log"

    r = alice.instance_get("alice", name, "lab")
    assert r.status_code == 200 and "JupyterLab" in r.text, (r.status_code, r.url)
    # the VM's login cookie only on its own prefix (the zygote once left it on "/": every server got it)
    # (alice's session also holds the cookies of her other tests' VMs: each on its own prefix)
    paths = {c.name: c.path for c in alice.s.cookies if c.name.startswith("jupyterhub-user-")}
    assert paths.get(f"jupyterhub-user-alice-{name}") == f"/user/alice/{name}/", paths
    assert all(path == f"/user/alice/{cookie.removeprefix('jupyterhub-user-alice-')}/"
               for cookie, path in paths.items()), paths
    facts = json.loads(run_code(alice, "alice", name, INSIDE, timeout=120))
    assert facts["vendor"] == "QEMU", facts  # a real VM, not the host
    assert facts["user"] == "alice"
    assert facts["files"] == sorted(os.listdir(hub_state / "data" / PROPOSAL))
    assert facts["write"] == "Read-only file system", facts
    assert not (hub_state / "data" / PROPOSAL / "written-by-vm").exists()

    with chromium() as browser:
        open_vm_desktop(browser, hub.url, "alice", name, artifacts / "qemu-desktop.png")
        collaboration_on_the_vm(hub, name)  # while alice's desktop page is open
    procs = json.loads(run_code(alice, "alice", name, INSIDE, timeout=120))["procs"]
    assert "openbox" in procs and any(p.startswith("Xvnc") or p.startswith("Xtigervnc") for p in procs), procs

    (pid,) = qemu_pids(qemu_state)
    hub.stop()
    assert qemu_pids(qemu_state) == [pid], "the VM must outlive the hub"
    hub.start()
    assert hub.wait_ready("alice", name, timeout=60)
    assert alice.instance_get("alice", name, "api/status").status_code == 200
    assert qemu_pids(qemu_state) == [pid]

    disk = qemu_state / "instances" / vm_name("alice", name) / "disk.qcow2"
    assert disk.exists()
    t_stop = time.monotonic()
    hub.stop_server("alice", name, timeout=120)
    stop = time.monotonic() - t_stop
    assert qemu_pids(qemu_state) == [], "stop must leave no QEMU process"
    assert "did not power off" not in hub.log_path.read_text(errors="replace"), \
        "the guest must power off on ACPI power-off, not be killed after the grace"
    assert stop < 60, f"stop took {stop:.1f} s"
    assert disk.exists(), "stop keeps the VM's disk (like a sandbox's home)"
    hub.delete_server("alice", name, timeout=120)
    assert not disk.parent.exists(), "delete must remove the overlay"
    print(f"cold boot through the hub: {boot:.1f} s; clean stop (ACPI power-off): {stop:.1f} s")
