"""Issue 15, items 3-5 against a real hub: what a GET, a pending account and a refused or
edited server record may no longer do, and the modes of the hub's state files.

Real hub and collaboration service (tests/collab's fixtures): slow.
"""
from __future__ import annotations

import stat
from pathlib import Path

import pytest
import requests

from tests.hubtools import Hub
from tests.support import wait_for

pytestmark = pytest.mark.root

LINK = "proposal=P-2026-042&plan=sandbox-large&screen=1280x720&keyboard=us"


def no_spawn(hub: Hub, user: str, name: str) -> bool:
    model = hub.server_model(user, name)
    return model is None or not (model.get("ready") or model.get("pending"))


# -- item 3: a cross-site GET creates and starts nothing; cookies are SameSite=Lax ----------------

@pytest.mark.parametrize("path", [f"spawn/carol/from-a-link?{LINK}", "spawn/carol/from-a-link?opt-proposal=P-2026-042",
                                  "spawn/carol/from-a-link"])
def test_a_link_creates_no_instance(collab_hub: Hub, person, server_records, path: str) -> None:
    carol = person("carol")
    before = server_records().get("carol", set())
    r = carol.s.get(f"{collab_hub.url}/hub/{path}", allow_redirects=False, timeout=30)
    assert r.status_code == 405, (r.status_code, r.text[:300])
    assert server_records().get("carol", set()) == before


def test_a_link_starts_no_existing_instance(collab_hub: Hub, person) -> None:
    carol = person("carol")
    assert collab_hub.api("PUT", "/users/carol/servers/kept", json={"user_options": {
        "proposal": "P-2026-042", "plan": "sandbox-small", "screen": "1280x720", "keyboard": "us"}}).status_code == 201
    for path in ("spawn/carol/kept", f"spawn/carol/kept?{LINK}", f"spawn/carol?{LINK}"):
        r = carol.s.get(f"{collab_hub.url}/hub/{path}", timeout=30)
        assert r.status_code < 500, (path, r.status_code)
        assert no_spawn(collab_hub, "carol", "kept") and no_spawn(collab_hub, "carol", ""), path
    assert 'name="_xsrf"' in r.text or r.status_code >= 400  # starting is a POST with the form's token


def test_every_hub_cookie_is_samesite_lax(collab_hub: Hub) -> None:
    s = requests.Session()
    r = s.get(f"{collab_hub.url}/hub/login", timeout=10)
    cookies = list(r.raw.headers.getlist("Set-Cookie"))
    xsrf = next(c.value for c in s.cookies if c.name == "_xsrf")
    r = s.post(f"{collab_hub.url}/hub/login", data={"username": "bob", "password": "bob-demo", "_xsrf": xsrf},
               allow_redirects=False, timeout=10)
    cookies += r.raw.headers.getlist("Set-Cookie")
    assert any(c.startswith("jupyterhub-hub-login=") for c in cookies), cookies
    for cookie in cookies:
        assert "samesite=lax" in cookie.lower().replace(" ", ""), cookie.split("=", 1)[0]


# -- item 4: quota 0 creates no records; refused and edited options lend no team -------------------

def test_an_account_awaiting_approval_creates_no_records(collab_hub: Hub, person, server_records) -> None:
    grace = person("grace")  # her browser session: the hub's cookie and XSRF token, as its pages' scripts
    xsrf = next(c.value for c in grace.s.cookies if c.name == "_xsrf")
    api = f"{collab_hub.url}/hub/api/users/grace/servers"
    for i in range(3):
        r = grace.s.put(f"{api}/rec{i}", headers={"X-XSRFToken": xsrf}, timeout=30,
                        json={"user_options": {"proposal": "P-2021-007"}})
        assert r.status_code == 403, (r.status_code, r.text)
        r = grace.s.post(f"{api}/start{i}", headers={"X-XSRFToken": xsrf}, timeout=30,
                         json={"user_options": {"proposal": "P-2021-007", "plan": "sandbox-small"}})
        assert r.status_code == 403, (r.status_code, r.text)
    assert server_records().get("grace", set()) == set()


def test_a_refused_start_lends_no_team(collab_hub: Hub, person, shares_of) -> None:
    """alice asks for carol's proposal: refused, and the record left behind says P-2026-042."""
    alice, _carol = person("alice"), person("carol")
    r = collab_hub.api("POST", "/users/alice/servers/borrowed", json={"user_options": {
        "proposal": "P-2026-042", "plan": "sandbox-small", "screen": "1280x720", "keyboard": "us"}})
    assert r.status_code < 600  # refused by VisaSpawner.start: an error, or 202 and then the failure
    wait_for(lambda: no_spawn(collab_hub, "alice", "borrowed"), 30, "the start refused")
    assert (collab_hub.server_model("alice", "borrowed") or {}).get("user_options", {}).get("proposal") in (
        None, "P-2026-042")
    r = alice.collab("POST", "instances/alice/borrowed/members", {"member": "carol", "role": "user"})
    assert r.status_code in (403, 404), r.text
    assert "carol" not in shares_of("alice", "borrowed")


def test_editing_a_stopped_instance_lends_no_team(collab_hub: Hub, person, shares_of) -> None:
    alice, _carol = person("alice"), person("carol")
    r = alice.new_instance(name="Edited", proposal="P-2026-011", plan="sandbox-small", screen="1280x720",
                           keyboard="us")
    assert r.status_code == 302, r.text[:300]
    server = r.headers["location"].rsplit("/", 1)[1]
    collab_hub.wait_ready("alice", server)
    assert alice.collab("GET", "instances").status_code == 200  # the service has seen it running
    collab_hub.stop_server("alice", server)
    r = collab_hub.api("PATCH", f"/users/alice/servers/{server}", json={"user_options": {"proposal": "P-2026-042"}})
    assert r.status_code == 200, r.text
    r = alice.collab("POST", f"instances/alice/{server}/members", {"member": "carol", "role": "user"})
    assert r.status_code == 403, r.text
    assert "carol" not in shares_of("alice", server)
    collab_hub.delete_server("alice", server)


# -- item 5: the hub's state files are private ------------------------------------------------------

def test_the_hubs_databases_are_private(collab_hub: Hub, collab_state: Path) -> None:
    files = sorted(p for p in collab_state.iterdir() if p.name.endswith((".sqlite", ".sqlite-wal", ".sqlite-shm",
                                                                         ".sqlite-journal")))
    assert {p.name for p in files} >= {"jupyterhub.sqlite", "visa_collab.sqlite"}, files
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, (p.name, oct(p.stat().st_mode))
