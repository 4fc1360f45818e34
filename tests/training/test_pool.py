"""Warm pools on a real hub with real sandboxes: adoption, isolation between adopters, the API, draining.

The hub runs `CourseHookBackend` (a server `course-<pool>` adopts from pool `<pool>`), standing in
for the spawner's course path so the pool is tested on its own.
"""
from __future__ import annotations

import pwd
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hubtools import REPO, Hub, demo_state, login_factory, run_code, running_hub
from tests.support import wait_for
from visa_spawner.backends.sandbox.pool import adopted_account

pytestmark = pytest.mark.root

CONFIG = Path(__file__).with_name("pool_hub_config.py")
MATERIALS = REPO / "hub_config" / "demo" / "courses" / "python-neutron"
OPEN_DATA = "P-2021-007"
BODY = {"plan": "sandbox-small", "proposal": OPEN_DATA, "materials": str(MATERIALS)}


@pytest.fixture(scope="module")
def pool_hub() -> Iterator[Hub]:
    states = demo_state()
    try:
        with running_hub(next(states), config=CONFIG) as hub:
            yield hub
    finally:
        next(states, None)  # removes the state dir


def pool_status(hub: Hub, name: str) -> dict:
    return hub.api("GET", f"/visa/pools/{name}").json()


def wait_pool_full(hub: Hub, name: str, size: int, timeout: float = 120) -> dict:
    return wait_for(lambda: (lambda s: s if s.get("ready") == size and not s.get("starting") else None)(
        pool_status(hub, name)), timeout, f"pool {name} with {size} ready")


def spawn(hub: Hub, user: str, server: str) -> float:
    t0 = time.monotonic()
    r = hub.api("POST", f"/users/{user}/servers/{server}", json={"plan": "sandbox-small", "proposal": OPEN_DATA})
    assert r.status_code in (201, 202), r.text
    hub.wait_ready(user, server)
    return time.monotonic() - t0


def pool_accounts(hub: Hub) -> set[str]:
    """Accounts of the sandboxes a pool holds now (its marks)."""
    marks = hub.state / "sandbox" / "pool"
    return {p.name for p in marks.iterdir()} if marks.is_dir() else set()


def nothing_left_of(hub: Hub, account: str) -> list[str]:
    """What still exists of a removed sandbox: account, home, cgroup, processes."""
    left = []
    try:
        uid = pwd.getpwnam(account).pw_uid
        left.append("account")
    except KeyError:
        uid = None
    if (hub.state / "sandbox" / "homes" / account).exists():
        left.append("home")
    if any(Path("/sys/fs/cgroup").glob(f"**/visahub/{account}")):
        left.append("cgroup")
    if uid is not None:
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                if f"Uid:\t{uid}\t" in status.read_text():
                    left.append(f"process {status.parent.name}")
            except OSError:
                continue
    return left


PROBE = """
import glob, os, pwd, socket
print("account", pwd.getpwuid(os.getuid()).pw_name)
print("hostname", socket.gethostname())
print("uid", os.getuid())
print("user", os.environ.get("JUPYTERHUB_USER"))
print("token", os.environ.get("JUPYTERHUB_API_TOKEN"))
print("homes", sorted(os.listdir("/home")))
print("materials", sorted(os.listdir(os.path.expanduser("~"))))
print("data", sorted(os.listdir("/data")))
uids = set()
blob = b""
for pid in glob.glob("/proc/[0-9]*"):
    try:
        uids.add(open(pid + "/status").read().split("Uid:")[1].split()[0])
        blob += open(pid + "/environ", "rb").read() + open(pid + "/cmdline", "rb").read()
    except OSError:
        pass
print("proc_uids", sorted(uids))
print("other_token_seen", OTHER in blob.decode(errors="replace") if OTHER else None)
try:
    print("other_home", os.listdir(OTHER_HOME) if OTHER_HOME else None)
except OSError as e:
    print("other_home", type(e).__name__)
open(os.path.expanduser("~/secret.txt"), "w").write(SECRET)
"""


def probe(client, user: str, server: str, other_token: str = "", other_home: str = "", secret: str = "") -> dict:
    code = f"OTHER, OTHER_HOME, SECRET = {other_token!r}, {other_home!r}, {secret!r}\n" + PROBE
    out = run_code(client, user, server, code)
    return dict(line.split(" ", 1) for line in out.strip().splitlines())


def test_adopters_get_lab_fast_and_share_nothing(pool_hub):
    hub, login = pool_hub, login_factory(pool_hub)
    alice, bob = login("alice"), login("bob")
    r = hub.api("PUT", "/visa/pools/adopt", json={**BODY, "size": 2})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "adopt" and r.json()["size"] == 2
    wait_pool_full(hub, "adopt", 2)
    pooled = pool_accounts(hub)

    seconds = spawn(hub, "alice", "course-adopt")
    assert seconds < 8, f"adoption took {seconds:.1f} s"
    lab = alice.instance_get("alice", "course-adopt", "lab")
    assert lab.status_code == 200
    # the owner's prefix, not the pooled sandbox's import-time "/" (visa_instance.zygote.ENV_DEFAULTS)
    login_cookie = next(c for c in alice.s.cookies if c.name == "jupyterhub-user-alice-course-adopt")
    assert login_cookie.path == "/user/alice/course-adopt/"
    spawn(hub, "bob", "course-adopt")

    a = probe(alice, "alice", "course-adopt", secret=f"alice-{uuid.uuid4().hex}")
    b = probe(bob, "bob", "course-adopt", other_token=a["token"], other_home=f"/home/{a['account']}")
    a2 = probe(alice, "alice", "course-adopt", other_token=b["token"],
               other_home=str(hub.state / "sandbox" / "homes" / b["account"]))
    # each took a different pooled sandbox and it is theirs: account, token, user
    assert {a["account"], b["account"]} <= pooled and a["account"] != b["account"]
    assert (a["user"], b["user"]) == ("alice", "bob")
    assert a["hostname"] == b["hostname"] == "course-adopt"  # the server's own, as if started the normal way
    assert a["token"] != b["token"] and len(a["token"]) > 20
    # the course's materials and the open data are there; nothing of the other
    assert "README.md" in a["materials"] and "README.md" in b["materials"]
    assert a["data"] == b["data"] == f"['{OPEN_DATA}']"
    assert a["homes"] == f"['{a['account']}']" and b["homes"] == f"['{b['account']}']"
    assert b["other_token_seen"] == "False" and a2["other_token_seen"] == "False"
    assert b["other_home"] in ("FileNotFoundError", "PermissionError") and a2["other_home"] in (
        "FileNotFoundError", "PermissionError")
    assert a["proc_uids"] == f"['{a['uid']}']" and b["proc_uids"] == f"['{b['uid']}']"

    # adopted sandboxes left the pool for good; it refills with new ones
    assert not pool_accounts(hub) & {a["account"], b["account"]}
    wait_pool_full(hub, "adopt", 2)
    assert not pool_accounts(hub) & {a["account"], b["account"]}

    # a restart keeps the adopted home and takes nothing from the pool
    before = pool_accounts(hub)
    hub.stop_server("alice", "course-adopt")
    spawn(hub, "alice", "course-adopt")
    assert alice.instance_get("alice", "course-adopt", "lab").status_code == 200  # the new server's login
    again = probe(alice, "alice", "course-adopt")
    assert again["account"] == a["account"] and "secret.txt" in again["materials"]
    assert pool_accounts(hub) == before

    # deleting the instance removes the pooled account for good
    hub.delete_server("alice", "course-adopt")
    assert nothing_left_of(hub, a["account"]) == []
    assert adopted_account(str(hub.state / "sandbox"), "alice", "course-adopt") == ""
    assert hub.api("DELETE", "/visa/pools/adopt").status_code == 204


def test_drained_pool_leaves_nothing(pool_hub):
    hub = pool_hub
    assert hub.api("PUT", "/visa/pools/drain", json={**BODY, "size": 2}).status_code == 200
    wait_pool_full(hub, "drain", 2)
    accounts = pool_accounts(hub)
    assert len(accounts) == 2
    assert hub.api("DELETE", "/visa/pools/drain").status_code == 204
    assert {a: nothing_left_of(hub, a) for a in accounts} == {a: [] for a in accounts}
    assert pool_accounts(hub) == set()
    assert hub.api("GET", "/visa/pools/drain").status_code == 404
    # drained while its sandboxes start: they are ended too
    assert hub.api("PUT", "/visa/pools/drain", json={**BODY, "size": 1}).status_code == 200
    wait_for(lambda: pool_accounts(hub), 30, "a pooled sandbox starting")
    starting = pool_accounts(hub)
    assert hub.api("DELETE", "/visa/pools/drain").status_code == 204
    assert pool_accounts(hub) == set()
    assert {a: nothing_left_of(hub, a) for a in starting} == {a: [] for a in starting}


@pytest.mark.parametrize(("body", "status", "message"), [
    ({**BODY, "plan": "no-such-plan", "size": 1}, 400, "Unknown plan"),
    ({**BODY, "plan": "vm", "size": 1}, 400, "warm pools exist for sandbox and OpenStack plans only"),
    ({**BODY, "size": -1}, 400, "size must be between 0 and"),
    ({**BODY, "size": 10_000}, 400, "size must be between 0 and"),
    ({**BODY, "size": "3"}, 400, "size is a whole number"),
    ({**BODY, "size": 1, "materials": "/etc"}, 400, "materials must be a folder of the hub's course materials"),
    ({**BODY, "size": 1, "proposal": "../etc"}, 400, "proposal is not a proposal id"),
    ({**BODY, "size": 1, "proposal": "P-0000-000"}, 400, "is not on this host"),
    ({**BODY, "size": 1, "colour": "red"}, 400, "Unknown field(s): colour"),
    ([1, 2], 400, "The body is a JSON object"),
])
def test_bad_pool_bodies_get_a_clear_400(pool_hub, body, status, message):
    r = pool_hub.api("PUT", "/visa/pools/bad", json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["message"]
    assert pool_hub.api("GET", "/visa/pools/bad").status_code == 404


def test_pool_api_is_for_admins_and_the_pool_scope(pool_hub):
    hub = pool_hub
    alice = login_factory(hub)("alice")
    xsrf = next(c.value for c in alice.s.cookies if c.name == "_xsrf" and c.path == "/hub/")
    made = alice.s.post(f"{hub.url}/hub/api/users/alice/tokens", json={"note": "pool test"},
                        headers={"X-XSRFToken": xsrf}, timeout=10)  # alice's own token, as from her token page
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    r = hub.api("PUT", "/visa/pools/mine", json={**BODY, "size": 1}, headers={"Authorization": f"token {token}"})
    assert r.status_code == 403 and "custom:visa-pools" in r.json()["message"]
    r = hub.api("PUT", "/visa/pools/Not_A_Name", data=b"{}")
    assert r.status_code == 400 and "name" in r.json()["message"]
    r = hub.api("PUT", "/visa/pools/notjson", data=b"{")
    assert r.status_code == 400 and "not JSON" in r.json()["message"]
    assert hub.api("DELETE", "/visa/pools/never-made").status_code == 404


def test_a_hub_restart_leaves_no_pooled_sandbox(pool_hub):
    hub = pool_hub
    # stopped (SIGTERM): the hub ends its pools as it exits
    assert hub.api("PUT", "/visa/pools/restart", json={**BODY, "size": 1}).status_code == 200
    wait_pool_full(hub, "restart", 1)
    accounts = pool_accounts(hub)
    hub.stop()
    assert {a: nothing_left_of(hub, a) for a in accounts} == {a: [] for a in accounts}
    assert pool_accounts(hub) == set()
    hub.start()
    # killed: the hub's end of each zygote's channel closed with it, so the zygote exits (its bridge
    # with it); the next hub removes accounts, homes and cgroups
    assert hub.api("PUT", "/visa/pools/restart", json={**BODY, "size": 1}).status_code == 200
    wait_pool_full(hub, "restart", 1)
    accounts = pool_accounts(hub)
    hub.stop(signal.SIGKILL)
    wait_for(lambda: not any(w.startswith("process") for a in accounts for w in nothing_left_of(hub, a)),
             30, "the pooled sandboxes' processes gone")
    assert pool_accounts(hub) == accounts
    hub.start()
    assert hub.api("GET", "/visa/pools/restart").status_code == 404  # pools are put again by their owner
    wait_for(lambda: not pool_accounts(hub), 30, "the earlier hub's pooled sandboxes removed")
    assert {a: nothing_left_of(hub, a) for a in accounts} == {a: [] for a in accounts}
