"""Warm start: two instances restored from one memory snapshot are different machines, each
configured for its own owner after the restore, and one owner cannot open the other's; the owner's
desktop, prestarted in the template, is drawn in Chromium through the hub."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.browser import chromium, open_vm_desktop
from tests.hubtools import run_code
from tests.spawner.qemu.conftest import PROPOSAL, create_vm, qemu_pids
from visa_spawner.backends.qemu.backend import QemuBackend

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.browser]

IDENTITY = """
import getpass, hashlib, json, os, socket
print(json.dumps({"user": getpass.getuser(), "machine_id": open("/etc/machine-id").read().strip(),
                  "hostname": socket.gethostname(), "random": os.urandom(16).hex(),
                  "token": hashlib.sha256(os.environ["JUPYTERHUB_API_TOKEN"].encode()).hexdigest(),
                  "boot_id": open("/proc/sys/kernel/random/boot_id").read().strip()}))
"""

# the desktop each clone's owner opened: the template's (restored), adopted by the owner; nothing of it secret
DESKTOP = """
import glob, hashlib, json, os, pwd
procs = {}
for d in glob.glob("/proc/[0-9]*"):
    try:
        procs.setdefault(open(d + "/comm").read().strip(), []).append(
            (d, os.stat(d).st_uid, open(d + "/cmdline", "rb").read().decode().split("\\0"),
             open(d + "/stat").read().rsplit(")", 1)[1].split()[1]))
    except OSError:
        pass
(xvnc,) = procs["Xvnc"]
(xterm,) = procs["xterm"]
(shell,) = [p[0] for p in sum(procs.values(), []) if p[3] == xterm[0][6:]]  # the terminal's shell
raw = open(shell + "/environ", "rb").read().decode().split("\\0")
env = dict(item.split("=", 1) for item in raw if "=" in item)
display = next(a for a in xvnc[2] if a.startswith(":"))
sock = os.stat("/tmp/.X11-unix/X" + display[1:])
print(json.dumps({"xvnc_pid": xvnc[0], "xvnc_user": pwd.getpwuid(xvnc[1]).pw_name, "rfb": xvnc[2][3],
                  "cookie": "-auth" in xvnc[2], "x_socket": [oct(sock.st_mode & 0o777), pwd.getpwuid(sock.st_uid).pw_name],
                  "terminal_user": env.get("JUPYTERHUB_USER"), "terminal_cwd": os.readlink(shell + "/cwd"),
                  "terminal_token": hashlib.sha256(env.get("JUPYTERHUB_API_TOKEN", "").encode()).hexdigest()}))
"""


def open_desktop(client, owner: str, name: str, timeout: float = 120) -> float:
    """Seconds until the owner's desktop websocket (through the hub) gets the VNC greeting."""
    import websocket

    base = f"/user/{owner}/{name}/"
    client.instance_get(owner, name, "lab")  # OAuth round trip: the instance's cookies
    cookies = "; ".join(f"{c.name}={c.value}" for c in client.s.cookies if base.startswith(c.path))
    t0 = time.monotonic()
    ws = websocket.create_connection(client.hub.url.replace("http", "ws") + f"{base}desktop/",
                                     header=[f"Cookie: {cookies}"], origin=client.hub.url, timeout=timeout)
    try:
        assert ws.recv()[:4] == b"RFB ", "no VNC greeting"
    finally:
        ws.close()
    return time.monotonic() - t0


async def prepare_snapshot(backend: QemuBackend, cpus: int, memory_mb: int) -> dict:
    """What the hub's backend does when no snapshot matches (it awaits nothing: the task runs on)."""
    task = backend.prepare_snapshot(cpus, memory_mb)
    assert task is not None, "the host has no room for the template VM"
    meta = await task
    assert meta, "the snapshot build failed: see the warnings above"
    return meta


def test_two_clones_of_one_snapshot_are_different_machines(hub, login, qemu_state, image_dir, artifacts):
    meta = asyncio.run(prepare_snapshot(QemuBackend(state_dir=str(qemu_state), image_dir=image_dir), 2, 2048))
    print("snapshot:", meta)
    alice, bob = login("alice"), login("bob")
    t0 = time.monotonic()
    a = create_vm(alice, "Warm A")
    b = create_vm(bob, "Warm B")
    hub.wait_ready("alice", a, timeout=300)
    hub.wait_ready("bob", b, timeout=300)
    print(f"two warm starts ready after {time.monotonic() - t0:.1f} s")
    assert hub.log_path.read_text(errors="replace").count("Memory snapshot restored") >= 2
    ia = json.loads(run_code(alice, "alice", a, IDENTITY, timeout=120))
    ib = json.loads(run_code(bob, "bob", b, IDENTITY, timeout=120))
    assert (ia["user"], ib["user"]) == ("alice", "bob")
    assert ia["boot_id"] == ib["boot_id"], "both must really come from the same saved machine"
    for key in ("machine_id", "hostname", "random", "token"):
        assert ia[key] != ib[key], f"{key} is the same in both clones"
    assert len(qemu_pids(qemu_state)) == 2

    for client, owner, name in ((alice, "alice", a), (bob, "bob", b)):
        print(f"{owner}'s desktop answered {open_desktop(client, owner, name):.1f} s after it was opened")
    da = json.loads(run_code(alice, "alice", a, DESKTOP, timeout=120))
    db = json.loads(run_code(bob, "bob", b, DESKTOP, timeout=120))
    print("desktops:", da, db)
    assert (da["xvnc_pid"], da["rfb"]) == (db["xvnc_pid"], db["rfb"]), "both desktops must be the template's"
    for d, owner in ((da, "alice"), (db, "bob")):
        assert (d["xvnc_user"], d["terminal_user"], d["x_socket"]) == (owner, owner, ["0o700", owner]), d
        assert not d["cookie"], "an X cookie made before the snapshot would be in every clone"
        assert d["terminal_cwd"] == f"/data/{PROPOSAL}", d  # the owner's shell in the proposal's data
    assert da["terminal_token"] != db["terminal_token"]
    with chromium() as browser:  # what alice sees: her clone's desktop page, drawn (panel, terminal, files)
        _, seconds = open_vm_desktop(browser, hub.url, "alice", a, artifacts / "qemu-warm-desktop.png", timeout=120)
        print(f"alice's warm desktop drawn in Chromium {seconds:.1f} s after the page opened")

    r = alice.instance_get("bob", b, "api/status")  # through the hub's OAuth, as a browser would
    assert r.status_code == 403 or "/user/bob/" not in r.url, (r.status_code, r.url)
    r = alice.instance_api("GET", "bob", b, "api/contents")
    assert r.status_code in (403, 404) or "/user/bob/" not in r.url, (r.status_code, r.url)
