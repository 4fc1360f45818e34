"""Issue 15, item 1: what a member read while a member stops working once they are removed.

Every process in an instance (kernels, terminals, the desktop) runs with the instance's
environment, so a USER member reads the server's JUPYTERHUB_API_TOKEN from a kernel. The hub
says that token is the owner's; the instance must not: it is refused as a person everywhere,
and it never makes the owner *present* (which would lift the owner-away lock). Removing the
member ends their own access within a minute, and the owner is offered a restart that ends
every process they left behind.

Real hub, collaboration service and sandbox (tests/collab's fixtures): slow.
"""
from __future__ import annotations

import pytest
import requests

from tests.collab.helpers import Person
from tests.hubtools import Hub, run_code
from tests.support import wait_for

pytestmark = pytest.mark.root

OWNER, PROPOSAL = "alice", "P-2026-011"
LEFTOVER = "sleep 4242.5"  # a process bob leaves running in the instance


def with_token(hub: Hub, token: str, method: str, server: str, path: str, **kw) -> requests.Response:
    return requests.request(method, f"{hub.url}/user/{OWNER}/{server}/{path}", timeout=30, allow_redirects=False,
                            headers={"Authorization": f"token {token}"}, **kw)


def level(who: Person, server: str) -> str | None:
    r = who.instance_call("GET", OWNER, server, "visa/api/room")
    return r.json().get("level") if r.status_code == 200 else None


def leftovers(alice: Person, server: str) -> str:
    return run_code(alice, OWNER, server, (
        "import os\n"
        "def cmd(p):\n"
        "    try: return open(f'/proc/{p}/cmdline','rb').read().replace(b'\\0', b' ').decode()\n"
        "    except OSError: return ''\n"
        f"print(sum({LEFTOVER!r} in cmd(p) for p in os.listdir('/proc') if p.isdigit()))"
    )).strip()


@pytest.fixture(scope="module")
def instance(collab_hub: Hub, person) -> str:
    for name in ("alice", "bob", "carol"):
        person(name)
    alice = person(OWNER)
    r = alice.new_instance(name="Removal", proposal=PROPOSAL, plan="sandbox-small", screen="1280x720", keyboard="us")
    assert r.status_code == 302, r.text[:500]
    server = r.headers["location"].rsplit("/", 1)[1]
    collab_hub.wait_ready(OWNER, server)
    r = alice.collab("POST", f"instances/{OWNER}/{server}/members", {"member": "bob", "role": "user"})
    assert r.status_code == 201, r.text
    yield server
    collab_hub.delete_server(OWNER, server)


def test_a_removed_member_keeps_nothing_from_the_instance(collab_hub: Hub, person, instance: str) -> None:
    alice, bob = person(OWNER), person("bob")
    assert alice.instance_call("GET", OWNER, instance, "api/contents/").status_code == 200  # the owner is here
    wait_for(lambda: level(bob, instance) == "full", 15, "bob at full level while alice is here")
    out = run_code(bob, OWNER, instance, (
        "import os, subprocess\n"
        f"subprocess.Popen({LEFTOVER.split()!r}, start_new_session=True)\n"
        "print(os.environ['JUPYTERHUB_API_TOKEN'])"))
    token = out.strip()
    assert len(token) >= 32, out

    # the server's token is nobody, from the start
    for method, path in [("GET", "visa/api/room"), ("GET", "api/contents/"), ("POST", "api/kernels"),
                         ("GET", "api/terminals"), ("GET", "lab")]:
        r = with_token(collab_hub, token, method, instance, path, json={} if method == "POST" else None)
        assert r.status_code == 403, (path, r.status_code, r.text[:200])
        assert '"role": "owner"' not in r.text

    # alice leaves; the token used from the instance does not bring her back
    wait_for(lambda: level(bob, instance) == "view", 30, "the room locked (alice away)")
    for _ in range(3):
        assert with_token(collab_hub, token, "GET", instance, "api/contents/").status_code == 403
    assert level(bob, instance) == "view", "the server's token counted as the owner being here"

    # removal: bob's own session loses everything within 60 s; the owner is offered a restart
    r = alice.collab("DELETE", f"instances/{OWNER}/{instance}/members/bob")
    assert r.status_code == 200 and r.json()["restart_suggested"] is True, r.text
    def gone() -> bool:
        r = bob.instance_call("GET", OWNER, instance, "visa/api/room")
        return r.status_code == 403 or (r.status_code == 200 and r.json()["role"] is None
                                        and r.json()["level"] == "none")

    wait_for(gone, 60, "bob's own access ended")
    assert bob.instance_call("GET", OWNER, instance, "api/contents/").status_code == 403
    assert with_token(collab_hub, token, "GET", instance, "visa/api/room").status_code == 403

    # what he left running ends with the restart the owner was offered
    assert alice.instance_call("GET", OWNER, instance, "api/contents/").status_code == 200
    assert leftovers(alice, instance) == "1"
    started = collab_hub.server_model(OWNER, instance)["started"]
    r = alice.collab("POST", f"instances/{OWNER}/{instance}/restart")
    assert r.status_code == 202, r.text
    wait_for(lambda: (collab_hub.server_model(OWNER, instance) or {}).get("started") != started, 120,
             "the instance started again")
    collab_hub.wait_ready(OWNER, instance, timeout=120)
    base = f"/user/{OWNER}/{instance}/"  # the new server knows none of the old logins: log in again
    for c in [c for c in alice.s.cookies if c.path.rstrip("/") == base.rstrip("/")]:
        alice.s.cookies.clear(c.domain, c.path, c.name)
    assert leftovers(alice, instance) == "0"
    assert with_token(collab_hub, token, "GET", instance, "api/contents/").status_code == 403  # old token: gone
