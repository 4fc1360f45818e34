"""A real hub, real sandboxes: create, use, isolate, stop, restart, fail cleanly."""
from __future__ import annotations

import json
import os
import pwd
import re
import stat
import threading

import pytest
import requests

from tests.hubtools import run_code, unique
from tests.spawner.sandbox.sandbox_probe import account, cgroup_pids, memory_limit_mb, processes_of
from tests.support import wait_for

pytestmark = pytest.mark.root

ALICE_PROPOSAL = "P-2026-011"
OPEN_DATA = "P-2021-007"


def create(client, name, proposal=ALICE_PROPOSAL, **extra):
    r = client.new_instance(name=name, proposal=proposal, plan="sandbox-small", screen="1280x720", keyboard="fr", **extra)
    assert r.status_code == 302, r.text[:500]
    return r.headers["location"].rsplit("/", 1)[1]


def read_progress(hub, user, server, events: list, done: threading.Event):
    """Collect the messages of JupyterHub's progress event stream until it ends.

    The hub answers 400 until the spawn is pending (it starts just after the form's redirect).
    """
    def stream():
        r = requests.get(f"{hub.url}/hub/api/users/{user}/servers/{server}/progress",
                         headers={"Authorization": f"token {hub.token}"}, stream=True, timeout=120)
        return r if r.status_code == 200 else r.close()

    with wait_for(stream, 30, f"progress stream of {user}/{server}", interval=0.01) as r:
        for line in r.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                events.append(json.loads(line[5:]))
                if events[-1].get("ready") or events[-1].get("failed"):
                    break
    done.set()


def test_login_page_tells_newcomers_the_demo_accounts(hub):
    page = requests.get(f"{hub.url}/hub/login", timeout=10).text
    for who in ("alice", "bob", "carol", "dave", "admin", "alice-demo"):
        assert who in page


def test_home_offers_only_own_and_open_proposals(login):
    home = login("alice").home().text
    form = home.split('id="visa-proposal"', 1)[1].split("</select>", 1)[0]
    assert set(re.findall(r'<option value="([^"]+)"', form)) == {ALICE_PROPOSAL, OPEN_DATA}


def test_instance_runs_in_its_own_sandbox_with_data_read_only(hub, hub_state, login):
    alice = login("alice")
    events, done = [], threading.Event()
    server = create(alice, unique("Isolation"))
    threading.Thread(target=read_progress, args=(hub, "alice", server, events, done), daemon=True).start()
    model = hub.wait_ready("alice", server)
    assert done.wait(30)
    messages = [e.get("message", "") for e in events]
    assert any("Preparing the instance's account" in m for m in messages), messages
    assert any("Starting the sandbox (1 CPU, 2048 MB)" in m for m in messages), messages
    assert events[-1].get("ready"), events[-1]
    assert model["user_options"]["proposal"] == ALICE_PROPOSAL

    data_files = sorted(os.listdir(hub_state / "data" / ALICE_PROPOSAL))
    listing = alice.instance_api("GET", "alice", server, f"api/contents/data/{ALICE_PROPOSAL}")
    assert listing.status_code == 200
    assert sorted(c["name"] for c in listing.json()["content"]) == data_files

    # a second instance (bob's) to look for from inside alice's
    bob = login("bob")
    bob_server = create(bob, unique("Neighbour"))
    hub.wait_ready("bob", bob_server)
    bob_home = hub_state / "sandbox" / "homes" / account("bob", bob_server)
    assert stat.S_IMODE(bob_home.stat().st_mode) == 0o700

    out = run_code(alice, "alice", server, f"""
import os, pwd
print("uid", os.getuid())
print("homes", sorted(os.listdir("/home")))
print("data", sorted(os.listdir("/data")))
for target in ({str(bob_home)!r}, {str(hub_state)!r}, "/data/{ALICE_PROPOSAL}/new.txt"):
    try:
        open(target if target.endswith(".txt") else target + "/x", "w").write("x")
        print("WROTE", target)
    except OSError as e:
        print("refused", target, type(e).__name__)
open(os.path.expanduser("~/notes.txt"), "w").write("mine")
print("home ok", open(os.path.expanduser("~/notes.txt")).read())
""")
    uid = pwd.getpwnam(account("alice", server)).pw_uid
    assert f"uid {uid}" in out and uid != 0
    assert f"homes ['{account('alice', server)}']" in out, out
    assert f"data ['{ALICE_PROPOSAL}']" in out, out
    assert "WROTE" not in out, out
    assert out.count("refused") == 3, out
    assert "home ok mine" in out
    assert memory_limit_mb("alice", server) == 2048
    hub.delete_server("bob", bob_server)
    hub.delete_server("alice", server)


def test_another_user_cannot_open_the_instance(hub, login):
    alice, carol = login("alice"), login("carol")
    server = create(alice, unique("Private"))
    hub.wait_ready("alice", server)
    assert alice.instance_get("alice", server, "lab").status_code == 200
    for path in ("lab", "visa/desktop", "api/contents/", "api/kernels"):
        r = carol.instance_get("alice", server, path)
        assert r.status_code == 403, (path, r.status_code, r.url)
        assert ALICE_PROPOSAL not in r.text  # nothing of the instance leaks into the refusal
    hub.delete_server("alice", server)


BAD_REQUESTS = [
    ({"name": "x", "proposal": "P-2026-042"}, "is not one you can use"),  # carol's proposal
    ({"name": "x", "proposal": "P-9999-999"}, "is not one you can use"),  # does not exist
    ({"name": "", "proposal": ALICE_PROPOSAL}, "Give the instance a name"),
    ({"name": "n" * 251, "proposal": ALICE_PROPOSAL}, "too long"),
    ({"name": "x", "proposal": ALICE_PROPOSAL, "plan": "gpu-huge"}, "not available to you"),
    ({"name": "x", "proposal": ALICE_PROPOSAL, "screen": "1x1"}, "not offered"),
    ({"name": "x", "proposal": ALICE_PROPOSAL, "keyboard": "$(reboot)"}, "not offered"),
]


@pytest.mark.parametrize("fields, message", BAD_REQUESTS)
def test_bad_requests_come_back_with_a_message_and_create_nothing(hub, login, fields, message):
    alice = login("alice")
    before = set(hub.api("GET", "/users/alice?include_stopped_servers=1").json()["servers"])
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', alice.home().text).group(1)
    body = {"_xsrf": xsrf, "plan": "sandbox-small", "screen": "1280x720", "keyboard": "us", **fields}
    r = alice.s.post(f"{hub.url}/hub/visa/new", data=body, allow_redirects=False, timeout=30)
    assert r.status_code == 400
    error = re.search(r'id="visa-error">([^<]*)<', r.text)
    assert error and message in error.group(1), r.text[:3000]
    assert 'id="visa-new-instance"' in r.text  # the form is back
    after = set(hub.api("GET", "/users/alice?include_stopped_servers=1").json()["servers"])
    assert after == before


def test_duplicate_name_and_quota(hub, login):
    bob = login("bob")  # quota 2
    first = create(bob, "Duplicate me")
    r = bob.new_instance(name="duplicate  ME", proposal=ALICE_PROPOSAL)
    assert r.status_code == 400 and "already have an instance named" in r.text
    second = create(bob, unique("Second"))
    r = bob.new_instance(name=unique("Third"), proposal=ALICE_PROPOSAL)
    assert r.status_code == 400 and "the most your account allows (2)" in r.text
    for name in (first, second):
        hub.wait_ready("bob", name)
        hub.delete_server("bob", name)
        assert not (hub.state / "sandbox" / "homes" / account("bob", name)).exists()
        with pytest.raises(KeyError):
            pwd.getpwnam(account("bob", name))


def test_pending_account_cannot_create(login):
    grace = login("grace")
    assert "waiting for approval" in grace.home().text
    r = grace.new_instance(name="try", proposal=OPEN_DATA)
    assert r.status_code == 400 and "waiting for approval" in r.text


def open_desktop(client, server):
    """Visit the desktop and wait for the VNC server's greeting through hub and proxy: from then on
    Xvnc and the window manager run."""
    import websocket

    client.instance_get(client.user, server, "visa/desktop")
    base = f"/user/{client.user}/{server}/"
    cookies = "; ".join(f"{c.name}={c.value}" for c in client.s.cookies if base.startswith(c.path))
    ws = websocket.create_connection(client.hub.url.replace("http", "ws") + base + "desktop/",
                                     header=[f"Cookie: {cookies}"], origin=client.hub.url, timeout=30)
    try:
        assert ws.recv().startswith(b"RFB 003.008")  # a real VNC server answered through hub and proxy
    finally:
        ws.close()


#: the long-lived processes that make an instance what it is, by (process name, argv) —
#: not the short-lived helpers its extensions start now and then (jupyter_lsp's `npm prefix -g`, …)
DEFINING = {
    "jupyter": lambda name, argv: any(os.path.basename(a) == "jupyterhub-singleuser" for a in argv[:2]),
    "desktop": lambda name, argv: name in ("Xvnc", "Xtigervnc"),
    "window manager": lambda name, argv: name == "openbox",
}


def defining_processes(owner, server) -> dict[str, set[tuple[int, float]]]:
    """{role: {(pid, start time)}} of the instance's defining processes (a reused pid differs in
    its start time)."""
    import psutil

    found: dict[str, set[tuple[int, float]]] = {}
    for pid in cgroup_pids(owner, server):
        try:
            p = psutil.Process(pid)
            with p.oneshot():
                name, argv, started = p.name(), p.cmdline(), p.create_time()
        except psutil.Error:  # gone since the cgroup was read: not a defining process
            continue
        for role, matches in DEFINING.items():
            if matches(name, argv):
                found.setdefault(role, set()).add((pid, started))
    return found


def test_stop_ends_the_whole_process_tree_including_the_desktop(hub, login):
    alice = login("alice")
    server = create(alice, unique("Desktop"))
    hub.wait_ready("alice", server)
    open_desktop(alice, server)
    running = " ".join(processes_of("alice", server))
    assert "Xtigervnc" in running or "Xvnc" in running, running
    assert "openbox" in running, running
    hub.stop_server("alice", server)
    assert cgroup_pids("alice", server) == set()
    assert processes_of("alice", server) == []
    hub.delete_server("alice", server)


def test_hub_restart_finds_the_running_sandbox(hub, login):
    alice = login("alice")
    server = create(alice, unique("Survivor"))
    hub.wait_ready("alice", server)
    open_desktop(alice, server)
    before = defining_processes("alice", server)
    assert before.keys() == DEFINING.keys(), before
    hub.stop()
    assert defining_processes("alice", server) == before  # the hub going away does not kill instances
    hub.start()
    assert hub.server_model("alice", server)["ready"]
    assert defining_processes("alice", server) == before  # the same processes, not new ones
    r = requests.get(f"{hub.url}/user/alice/{server}/api/status", headers={"Authorization": f"token {hub.token}"}, timeout=10)
    assert r.status_code == 200
    hub.delete_server("alice", server)
    assert processes_of("alice", server) == []


def test_a_sandbox_that_cannot_start_says_why_and_leaves_nothing(hub, hub_state, login):
    alice = login("alice")
    data = hub_state / "data" / OPEN_DATA
    hidden = data.with_name(OPEN_DATA + ".hidden")
    data.rename(hidden)
    try:
        events, done = [], threading.Event()
        server = create(alice, unique("Broken"), proposal=OPEN_DATA)
        threading.Thread(target=read_progress, args=(hub, "alice", server, events, done), daemon=True).start()
        assert done.wait(60)
    finally:
        hidden.rename(data)
    assert events[-1].get("failed"), events
    assert f"The data of proposal {OPEN_DATA} is not available" in events[-1]["message"]
    assert "Traceback" not in events[-1]["message"]
    model = hub.server_model("alice", server)
    assert model and not model["ready"] and not model["pending"]
    assert cgroup_pids("alice", server) == set()
    assert processes_of("alice", server) == []
    hub.delete_server("alice", server)


def test_hub_stays_responsive_while_instances_start(hub, login):
    """Spawning runs no blocking work on the hub's event loop: its API keeps answering.

    The bound is loose (2 s) so a loaded CI machine does not fail it; what it catches is a
    blocking wait in a spawn (a synchronous subprocess, sleep or socket wait), which stalls
    every request for the whole wait. Latency figures belong to bench/, not here.
    """
    import concurrent.futures
    import time

    admin = login("admin")  # unlimited quota
    latencies: list[float] = []
    stop = threading.Event()

    def ping():
        while not stop.is_set():
            t0 = time.perf_counter()
            assert requests.get(f"{hub.url}/hub/api", timeout=5).status_code == 200
            latencies.append(time.perf_counter() - t0)

    pinger = threading.Thread(target=ping, daemon=True)
    pinger.start()
    names = [create(admin, unique("Burst"), proposal=OPEN_DATA) for _ in range(3)]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda n: hub.wait_ready("admin", n), names))
    stop.set()
    pinger.join()
    for name in names:
        hub.delete_server("admin", name)
    latencies.sort()
    assert len(latencies) > 20
    assert latencies[-1] < 2.0, f"slowest hub API answer during 3 spawns: {latencies[-1]:.3f}s"


def test_staff_instance_without_proposal_mounts_no_data(hub, login):
    erin = login("erin")  # IT support, staff: no proposal of her own
    assert "No proposal (staff instance" in erin.home().text
    server = create(erin, unique("Staff tools"), proposal="")
    hub.wait_ready("erin", server)
    assert erin.instance_api("GET", "erin", server, "api/contents/data").status_code == 404
    r = login("bob").new_instance(name="no proposal", proposal="")
    assert r.status_code == 400 and "Choose the proposal" in r.text
