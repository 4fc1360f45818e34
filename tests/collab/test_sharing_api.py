"""Sharing through the real hub: bad input, invitation links, leaving the proposal, access requests."""
from __future__ import annotations

import re
from html import unescape

import pytest

from tests.collab.helpers import Person
from tests.hubtools import Hub
from tests.rfb import RfbClient
from tests.support import wait_for

pytestmark = pytest.mark.root

OWNER, PROPOSAL = "alice", "P-2026-011"


@pytest.fixture(scope="module")
def server(collab_hub: Hub, person) -> str:
    for name in ("alice", "bob", "carol", "dave", "erin", "frank"):
        person(name)
    r = person(OWNER).new_instance(name="Sharing run", proposal=PROPOSAL, plan="sandbox-small",
                                   screen="1280x720", keyboard="us")
    assert r.status_code == 302, r.text[:500]
    name = r.headers["location"].rsplit("/", 1)[1]
    collab_hub.wait_ready(OWNER, name)
    yield name
    collab_hub.delete_server(OWNER, name)


def hub_shares(hub: Hub, server: str) -> dict[str, list[str]]:
    r = hub.api("GET", f"/shares/{OWNER}/{server}")
    assert r.status_code == 200, r.text
    items = r.json()["items"] if isinstance(r.json(), dict) else r.json()
    return {s["user"]["name"]: sorted(s["scopes"]) for s in items if s.get("user")}


def audit(alice: Person, server: str) -> list[dict]:
    return alice.collab("GET", f"instances/{OWNER}/{server}/audit").json()


def level(who: Person, server: str) -> str:
    return who.instance_call("GET", OWNER, server, "visa/api/room").json()["level"]


BAD_GRANTS = [
    ({"member": "nobody-at-all", "role": "guest"}, 404, "must log in once"),
    ({"member": "alice", "role": "guest"}, 400, "with yourself"),
    ({"member": "bob", "role": "root"}, 400, "Unknown role"),
    ({"member": "bob", "role": "owner"}, 400, "cannot be granted"),
    ({"member": "carol", "role": "user"}, 403, "not on the team of proposal P-2026-011"),
    ({"member": "frank", "role": "guest"}, 403, "not on the team"),
    ({"member": "bob", "role": "support"}, 403, "not facility support staff"),
    ({"role": "guest"}, 400, "Say who"),
]


@pytest.mark.parametrize("body, status, message", BAD_GRANTS)
def test_bad_grants_are_refused_and_audited(collab_hub: Hub, person, server: str, body, status, message) -> None:
    alice = person(OWNER)
    before = hub_shares(collab_hub, server)
    r = alice.collab("POST", f"instances/{OWNER}/{server}/members", body)
    assert r.status_code == status, r.text
    assert message in r.json()["message"]
    assert hub_shares(collab_hub, server) == before
    last = audit(alice, server)[0]
    assert last["outcome"] == "refused" and message in last["detail"]["reason"]


def test_only_the_owner_shares(collab_hub: Hub, person, server: str) -> None:
    r = person("bob").collab("POST", f"instances/{OWNER}/{server}/members", {"member": "dave", "role": "guest"})
    assert r.status_code == 403
    assert "dave" not in hub_shares(collab_hub, server)
    r = person("bob").collab("POST", f"instances/{OWNER}/no-such-server/members", {"member": "dave", "role": "guest"})
    assert r.status_code == 404


def _accept_page(who: Person, url: str):
    page = who.s.get(f"{who.hub.url}{url}", timeout=30)
    return page


def test_invitation_link_one_use(collab_hub: Hub, person, server: str) -> None:
    alice, bob, dave, carol = person(OWNER), person("bob"), person("dave"), person("carol")
    inv = alice.collab("POST", f"instances/{OWNER}/{server}/invitations",
                       {"role": "guest", "expires_in": 3600, "max_uses": 1}).json()
    assert inv["url"].startswith("/services/visa-collab/invite?code=vi_")
    # carol is not on the team: refused, and the use is not spent
    page = _accept_page(carol, inv["url"])
    assert page.status_code == 200 and "Accept and open" in page.text
    r = carol.service_post_form("invite", {"code": inv["code"]}, allow_redirects=False)
    assert r.status_code == 403 and "not on the team" in unescape(r.text)
    # bob accepts: lands on the desktop as a guest
    r = bob.service_post_form("invite", {"code": inv["code"]}, allow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == f"/user/{OWNER}/{server}/visa/desktop"
    assert "bob" in hub_shares(collab_hub, server)
    assert bob.open_instance(OWNER, server, "visa/desktop").status_code == 200
    assert level(bob, server) == "view"
    # used up: dave gets a clear refusal, nothing granted
    page = _accept_page(dave, inv["url"])
    assert page.status_code == 410 and "already been used" in page.text
    r = dave.service_post_form("invite", {"code": inv["code"]}, allow_redirects=False)
    assert r.status_code == 410 and "dave" not in hub_shares(collab_hub, server)
    refused = [a for a in audit(alice, server) if a["action"] == "accept-invitation" and a["outcome"] == "refused"]
    assert {a["member"] for a in refused} == {"carol", "dave"}
    accepted = [a for a in audit(alice, server) if a["action"] == "accept-invitation" and a["outcome"] == "ok"]
    assert accepted[0]["member"] == "bob" and accepted[0]["granted_by"] == OWNER


def test_withdrawn_and_forged_invitations(collab_hub: Hub, person, server: str) -> None:
    alice, dave = person(OWNER), person("dave")
    inv = alice.collab("POST", f"instances/{OWNER}/{server}/invitations",
                       {"role": "user", "expires_in": 600, "max_uses": 5}).json()
    assert alice.collab("DELETE", f"instances/{OWNER}/{server}/invitations/{inv['id']}").status_code == 204
    r = dave.service_post_form("invite", {"code": inv["code"]}, allow_redirects=False)
    assert r.status_code == 410 and "withdrawn" in r.text
    for code in (inv["code"][:-4] + "AAAA", "vi_" + "x" * 30, "", "../../etc/passwd"):
        r = dave.service_post_form("invite", {"code": code}, allow_redirects=False)
        assert r.status_code == 404 and "not valid" in r.text
    assert "dave" not in hub_shares(collab_hub, server)
    bad = alice.collab("POST", f"instances/{OWNER}/{server}/invitations", {"role": "support"})
    assert bad.status_code == 400


def test_a_member_who_leaves_the_proposal_loses_access(collab_hub: Hub, person, server: str) -> None:
    alice, bob = person(OWNER), person("bob")
    r = alice.collab("PATCH", f"instances/{OWNER}/{server}/members/bob", {"role": "user"})
    assert r.status_code == 200, r.text
    assert bob.open_instance(OWNER, server, "visa/desktop").status_code == 200
    group = f"/groups/proposal:{PROPOSAL}/users"
    assert collab_hub.api("DELETE", group, json={"users": ["bob"]}).status_code == 200
    try:
        wait_for(lambda: "bob" not in hub_shares(collab_hub, server), 20, "bob's share revoked")
        wait_for(lambda: bob.instance_call("GET", OWNER, server, "visa/desktop").status_code == 403, 15,
                 "bob refused by the instance")
        entry = next(a for a in audit(alice, server) if a["action"] == "revoke" and a["member"] == "bob")
        assert "left the team of proposal" in entry["detail"]["reason"] and entry["actor"] == "visa-collab"
        r = alice.collab("POST", f"instances/{OWNER}/{server}/members", {"member": "bob", "role": "guest"})
        assert r.status_code == 403 and "not on the team" in r.json()["message"]
    finally:
        collab_hub.api("POST", group, json={"users": ["bob"]})


def test_team_instances(person, server: str) -> None:
    team = person("bob").collab("GET", "team-instances").json()
    assert any(i["owner"] == OWNER and i["server"] == server for i in team)
    assert not any(i["server"] == server for i in person("carol").collab("GET", "team-instances").json())


def owner_page_polls(alice, server: str) -> None:
    """What the prompt the owner's desktop page loads does every 2 s: it is how the service
    knows the owner is here (the instance's own presence reports do not decide it)."""
    assert alice.collab("GET", f"pending-requests?server={server}").status_code == 200


def owner_connected(person, server: str) -> bool:
    support = person("erin").collab("GET", "support-instances").json()
    return next(i for i in support if i["owner"] == OWNER and i["server"] == server)["owner_connected"]


def test_access_request_while_the_owner_is_connected(collab_hub: Hub, person, server: str) -> None:
    alice, dave, erin = person(OWNER), person("dave"), person("erin")
    alice.open_instance(OWNER, server, "visa/desktop")
    owner = RfbClient(alice.websocket(OWNER, server, "desktop/"))
    owner.screen()
    try:
        wait_for(lambda: alice.collab("GET", f"instances/{OWNER}/{server}").json()["presence"], 15,
                 "the owner's presence reported")
        # the instance's report alone does not make her present to the service: her page's poll does
        assert not owner_connected(person, server)
        owner_page_polls(alice, server)
        assert owner_connected(person, server)
        req = dave.collab("POST", f"instances/{OWNER}/{server}/requests").json()
        assert req["status"] == "pending", req
        assert "dave" not in hub_shares(collab_hub, server)
        assert dave.collab("POST", f"requests/{req['id']}/decision", {"decision": "full"}).status_code == 403
        pending = alice.collab("GET", f"pending-requests?server={server}").json()
        assert [p["requester"] for p in pending] == ["dave"]
        # the owner's desktop page learns there is a request (it shows the prompt then)
        wait_for(lambda: alice.instance_call("GET", OWNER, server, "visa/api/room").json()["pending_requests"] == 1,
                 10, "pending request seen by the instance")
        r = alice.collab("POST", f"requests/{req['id']}/decision", {"decision": "read-only"})
        assert r.status_code == 200 and r.json()["status"] == "read-only"
        assert dave.collab("GET", f"requests/{req['id']}").json()["status"] == "read-only"
        assert dave.open_instance(OWNER, server, "visa/desktop").status_code == 200
        assert level(dave, server) == "view"
        # a rejection keeps erin out
        owner_page_polls(alice, server)
        req = erin.collab("POST", f"instances/{OWNER}/{server}/requests").json()
        assert req["status"] == "pending"
        assert alice.collab("POST", f"requests/{req['id']}/decision", {"decision": "reject"}).json()["status"] == "rejected"
        assert erin.collab("GET", f"requests/{req['id']}").json()["status"] == "rejected"
        assert "erin" not in hub_shares(collab_hub, server)
        assert erin.open_instance(OWNER, server, "visa/desktop").status_code == 403
        # people who are not support staff cannot ask
        assert person("carol").collab("POST", f"instances/{OWNER}/{server}/requests").status_code == 403
    finally:
        owner.close()


def test_support_walks_in_while_the_owner_is_away(collab_hub: Hub, person, server: str) -> None:
    alice, erin = person(OWNER), person("erin")
    wait_for(lambda: not alice.collab("GET", f"instances/{OWNER}/{server}").json()["presence"], 30,
             "the owner gone (presence expired)")
    wait_for(lambda: not owner_connected(person, server), 30, "the owner's page gone (owner_page_ttl)")
    req = erin.collab("POST", f"instances/{OWNER}/{server}/requests").json()
    assert req["status"] == "full" and req["role"] == "support"
    assert erin.open_instance(OWNER, server, "lab").status_code == 200
    entry = next(a for a in audit(alice, server) if a["action"] == "request-access" and a["member"] == "erin"
                 and a["outcome"] == "ok")
    assert entry["granted_by"] == "facility role"


def test_support_page_lists_what_erin_may_support(person, server: str) -> None:
    page = person("erin").service_get("").text
    assert 'id="visa-support"' in page and f'data-server="{server}"' in page
    assert 'id="visa-support"' not in person("carol").service_get("").text
    assert re.search(r"Collaboration", page)
