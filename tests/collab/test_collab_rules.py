"""The collaboration service's decisions against an in-memory hub (``-m fast``)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from tests.collab.fakehub import FakeHub
from visa_collab import db
from visa_collab.collab import CollabError, Collaboration

F = "!server=alice/run"


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 11, 24, 12, 0)
        self.m = 1000.0

    def now(self) -> datetime:
        return self.t

    def mono(self) -> float:
        return self.m

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)
        self.m += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake() -> FakeHub:
    h = FakeHub()
    h.add_person("alice", ["proposal:P-1", "role:user"])
    h.add_person("bob", ["proposal:P-1", "role:user"])
    h.add_person("carol", ["proposal:P-2", "role:user"])
    h.add_person("dave", ["proposal:P-1", "role:instrument_scientist", "role:staff"])
    h.add_person("erin", ["role:it_support", "role:staff"])
    h.add_person("admin", ["role:admin"], admin=True)
    h.add_server("alice", "run", "P-1")
    return h


@pytest.fixture
def collab(tmp_path, fake, clock) -> Collaboration:
    engine = db.connect(f"sqlite:///{tmp_path / 'c.sqlite'}")
    db.migrate(engine)
    return Collaboration(engine, fake, now=clock.now, monotonic=clock.mono, request_ttl=300)


def audit(collab: Collaboration) -> list[dict]:
    with collab.database.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(db.audit).order_by(db.audit.c.id)).mappings()]


async def test_owner_adds_changes_and_removes_a_member(collab: Collaboration, fake: FakeHub) -> None:
    grant = await collab.add_member("alice", "alice", "run", "bob", "guest")
    assert grant["role"] == "guest" and grant["granted_by"] == "alice"
    assert fake.scopes_of("alice", "run", "bob") == {f"access:servers{F}", f"custom:visa-guest{F}"}
    await collab.change_role("alice", "alice", "run", "bob", "user")
    assert fake.scopes_of("alice", "run", "bob") == {f"access:servers{F}", f"custom:visa-user{F}"}
    members = (await collab.members("alice", "alice", "run"))["members"]
    assert [(m["member"], m["role"]) for m in members] == [("bob", "user")]
    await collab.remove_member("alice", "alice", "run", "bob")
    assert fake.scopes_of("alice", "run", "bob") == set()
    assert [a["action"] for a in audit(collab)] == ["grant", "change-role", "revoke"]
    assert all(a["outcome"] == "ok" for a in audit(collab))


@pytest.mark.parametrize("actor, member, role, status, message", [
    ("alice", "nobody", "guest", 404, "must log in once"),
    ("alice", "alice", "guest", 400, "with yourself"),
    ("alice", "bob", "owner", 400, "cannot be granted"),
    ("alice", "bob", "superuser", 400, "Unknown role"),
    ("alice", "carol", "user", 403, "not on the team of proposal P-1"),
    ("alice", "erin", "guest", 403, "not on the team"),
    ("alice", "bob", "support", 403, "not facility support staff"),
    ("bob", "dave", "guest", 403, "Only the owner"),
    ("admin", "bob", "guest", 403, "Only the owner"),
    ("alice", "", "guest", 400, "Say who"),
])
async def test_bad_grants_are_refused_audited_and_grant_nothing(collab, fake, actor, member, role, status, message) -> None:
    with pytest.raises(CollabError) as e:
        await collab.add_member(actor, "alice", "run", member, role)
    assert e.value.status == status and message in e.value.message
    assert not [c for c in fake.calls if c[0] == "grant"]
    (entry,) = audit(collab)
    assert entry["outcome"] == "refused" and entry["actor"] == actor and message in entry["detail"]


async def test_unknown_instance(collab) -> None:
    with pytest.raises(CollabError) as e:
        await collab.add_member("alice", "alice", "nope", "bob", "guest")
    assert e.value.status == 404


async def test_duplicate_member_is_a_conflict(collab) -> None:
    await collab.add_member("alice", "alice", "run", "bob", "guest")
    with pytest.raises(CollabError) as e:
        await collab.add_member("alice", "alice", "run", "bob", "user")
    assert e.value.status == 409


async def test_support_staff_can_be_added_as_support(collab, fake) -> None:
    await collab.add_member("alice", "alice", "run", "erin", "support")
    await collab.add_member("alice", "alice", "run", "dave", "support")
    assert f"custom:visa-support{F}" in fake.scopes_of("alice", "run", "erin")


async def test_invitation_life(collab, fake, clock) -> None:
    inv = await collab.invite("alice", "alice", "run", "guest", expires_in=3600, max_uses=1)
    assert inv["url"].startswith("/services/visa-collab/invite?code=vi_")
    with pytest.raises(CollabError) as e:  # not on the team: refused, the use is not spent
        await collab.accept_invitation("carol", inv["code"])
    assert e.value.status == 403
    got = await collab.accept_invitation("bob", inv["code"])
    assert got["role"] == "guest" and got["granted_by"] == "alice"
    assert f"custom:visa-guest{F}" in fake.scopes_of("alice", "run", "bob")
    with pytest.raises(CollabError) as e:  # used up
        await collab.accept_invitation("dave", inv["code"])
    assert e.value.status == 410 and "already been used" in e.value.message
    assert "dave" not in {m for (_o, _s, m) in fake.share_table}


@pytest.mark.parametrize("spoil, status, message", [
    ("expire", 410, "expired"),
    ("revoke", 410, "withdrawn"),
    ("garble", 404, "not valid"),
])
async def test_spoilt_invitations(collab, fake, clock, spoil, status, message) -> None:
    inv = await collab.invite("alice", "alice", "run", "user", expires_in=60, max_uses=5)
    code = inv["code"]
    if spoil == "expire":
        clock.advance(61)
    elif spoil == "revoke":
        await collab.revoke_invitation("alice", "alice", "run", inv["id"])
    else:
        code = code[:-3] + "xyz"
    with pytest.raises(CollabError) as e:
        await collab.accept_invitation("bob", code)
    assert e.value.status == status and message in e.value.message
    assert fake.scopes_of("alice", "run", "bob") == set()
    if spoil != "garble":
        assert audit(collab)[-1]["outcome"] == "refused"


@pytest.mark.parametrize("role, expires_in, max_uses, message", [
    ("support", 60, 1, "on request or by name"),
    ("guest", 10, 1, "between one minute and 30 days"),
    ("guest", 60, 0, "1 to 100"),
    ("guest", "soon", 1, "whole numbers"),
])
async def test_bad_invitations(collab, role, expires_in, max_uses, message) -> None:
    with pytest.raises(CollabError, match=message):
        await collab.invite("alice", "alice", "run", role, expires_in=expires_in, max_uses=max_uses)


async def test_access_request_when_the_owner_is_away_lets_support_in(collab, fake) -> None:
    result = await collab.request_access("erin", "alice", "run")
    assert result["status"] == "full"
    assert f"custom:visa-support{F}" in fake.scopes_of("alice", "run", "erin")
    assert audit(collab)[-1]["granted_by"] == "facility role"


async def owner_page_polls(collab: Collaboration, owner: str = "alice", server: str = "run") -> None:
    """The running instance long-polls the service (its room exists); the owner's desktop page
    (its access-request prompt) polls `pending-requests?server=`, signed in as the owner."""
    await collab.wait_room(owner, server, None, 0)
    collab.owner_polled(owner, server)


async def test_access_request_round_trip_while_the_owner_is_connected(collab, fake, clock) -> None:
    await owner_page_polls(collab)
    pending = await collab.request_access("dave", "alice", "run")
    assert pending["status"] == "pending"
    assert fake.scopes_of("alice", "run", "dave") == set()
    again = await collab.request_access("dave", "alice", "run")
    assert again["id"] == pending["id"]  # one pending request, not a pile
    with pytest.raises(CollabError) as e:
        await collab.decide("bob", pending["id"], "full")
    assert e.value.status == 403
    with pytest.raises(CollabError):
        await collab.decide("alice", pending["id"], "maybe")
    decided = await collab.decide("alice", pending["id"], "read-only")
    assert decided["status"] == "read-only"
    assert f"custom:visa-guest{F}" in fake.scopes_of("alice", "run", "dave")
    assert (await collab.request_status("dave", pending["id"]))["status"] == "read-only"
    with pytest.raises(CollabError) as e:  # answered already
        await collab.decide("alice", pending["id"], "full")
    assert e.value.status == 409


async def test_rejected_and_expired_requests(collab, fake, clock) -> None:
    await owner_page_polls(collab)
    first = await collab.request_access("erin", "alice", "run")
    await collab.decide("alice", first["id"], "reject")
    assert fake.scopes_of("alice", "run", "erin") == set()
    assert (await collab.request_status("erin", first["id"]))["status"] == "rejected"
    second = await collab.request_access("erin", "alice", "run")
    clock.advance(301)
    assert (await collab.request_status("erin", second["id"]))["status"] == "expired"


async def test_only_support_staff_may_ask(collab) -> None:
    for who in ("carol", "bob"):
        with pytest.raises(CollabError) as e:
            await collab.request_access(who, "alice", "run")
        assert e.value.status == 403


async def test_presence_goes_stale(collab, clock) -> None:
    await collab.report("alice", "run", [{"user": "bob", "role": "user", "channel": "desktop"}], [])
    assert collab.presence("alice", "run")
    clock.advance(46)
    assert collab.presence("alice", "run") == []
    await owner_page_polls(collab)
    assert collab.owner_present("alice", "run")
    clock.advance(collab.owner_page_ttl + 1)
    assert not collab.owner_present("alice", "run")


async def test_a_forged_instance_report_does_not_let_support_in_while_the_owners_page_polls(collab, fake) -> None:
    """Code in the instance holds its server token and may post any presence: "owner away"
    must not let support staff in without asking while the owner's own page polls the service."""
    await collab.report("alice", "run", [{"user": "alice", "role": "owner", "channel": "desktop"}], [])
    await owner_page_polls(collab)
    # a removed member's leftover process, with the server token, says alice left
    await collab.report("alice", "run", [], [{"event": "disconnect", "user": "alice", "role": "owner",
                                        "channel": "desktop"}])
    assert collab.presence("alice", "run") == []  # the report is kept, as information
    assert collab.owner_present("alice", "run")
    result = await collab.request_access("erin", "alice", "run")
    assert result["status"] == "pending"
    assert fake.scopes_of("alice", "run", "erin") == set()
    assert json.loads(audit(collab)[-1]["detail"])["owner_connected"] is True


async def test_the_owners_polls_alone_make_them_present(collab, fake, clock) -> None:
    # the instance runs (it long-polls) and reports nobody; the owner's page polls: present
    await owner_page_polls(collab)
    assert collab.presence("alice", "run") == [] and collab.owner_present("alice", "run")
    support = await collab.support_instances("erin")
    assert next(i for i in support if i["server"] == "run")["owner_connected"] is True
    assert (await collab.request_access("dave", "alice", "run"))["status"] == "pending"
    # her page closed: after owner_page_ttl she is away and support walks in
    clock.advance(collab.owner_page_ttl + 1)
    assert not collab.owner_present("alice", "run")
    assert (await collab.request_access("erin", "alice", "run"))["status"] == "full"


async def test_the_instance_saying_the_owner_is_there_does_not_make_her_present(collab) -> None:
    await collab.report("alice", "run", [{"user": "alice", "role": "owner", "channel": "desktop"}], [])
    assert collab.presence("alice", "run") and not collab.owner_present("alice", "run")


async def test_owner_polls_for_unknown_instances_leave_nothing(collab) -> None:
    collab.owner_polled("alice", "no-such-server")
    assert ("alice", "no-such-server") not in collab.rooms
    assert not collab.owner_present("alice", "no-such-server")


async def test_connection_events_are_audited_with_who_granted(collab) -> None:
    await collab.add_member("alice", "alice", "run", "bob", "guest")
    await collab.report("alice", "run", [], [
        {"at": "2026-11-24T12:00:05+00:00", "event": "connect", "user": "bob", "role": "guest", "channel": "desktop"},
        {"event": "disconnect", "user": "bob", "role": "guest", "channel": "desktop", "dropped_input": 12},
    ])
    log = await collab.audit_log("alice", "alice", "run")
    connect = next(a for a in log if a["action"] == "connect")
    assert connect["granted_by"] == "alice" and connect["source"] == "instance" and connect["detail"]["channel"] == "desktop"
    assert next(a for a in log if a["action"] == "disconnect")["detail"]["dropped_input"] == 12


async def test_audit_log_is_for_the_owner_and_admins(collab) -> None:
    assert await collab.audit_log("admin", "alice", "run") == []
    for who in ("bob", "erin", "carol"):
        with pytest.raises(CollabError) as e:
            await collab.audit_log(who, "alice", "run")
        assert e.value.status == 403


async def test_member_who_left_the_proposal_loses_access(collab, fake) -> None:
    await collab.add_member("alice", "alice", "run", "bob", "user")
    await collab.add_member("alice", "alice", "run", "erin", "support")
    assert await collab.reconcile() == 0
    fake.people["bob"]["groups"].remove("proposal:P-1")
    assert await collab.reconcile() == 1
    assert fake.scopes_of("alice", "run", "bob") == set()
    assert "erin" in {m for (_o, _s, m) in fake.share_table}
    entry = audit(collab)[-1]
    assert entry["action"] == "revoke" and "left the team of proposal P-1" in entry["detail"]
    with pytest.raises(CollabError) as e:
        await collab.add_member("alice", "alice", "run", "bob", "guest")
    assert e.value.status == 403


async def test_share_removed_in_the_hub_is_forgotten(collab, fake) -> None:
    await collab.add_member("alice", "alice", "run", "bob", "user")
    await fake.revoke("alice", "run", "bob")
    assert await collab.reconcile() == 1
    assert (await collab.members("alice", "alice", "run"))["members"] == []


async def test_room_version_moves_on_grants(collab) -> None:
    v0 = collab.room_version("alice", "run")
    await collab.add_member("alice", "alice", "run", "bob", "guest")
    state = await collab.wait_room("alice", "run", v0, timeout=0.01)
    assert state["version"] != v0 and state["owner_away"] == "lock"
    await collab.set_policy("alice", "alice", "run", "disconnect")
    assert (await collab.wait_room("alice", "run", None, 0))["owner_away"] == "disconnect"
    with pytest.raises(CollabError):
        await collab.set_policy("alice", "alice", "run", "explode")


async def test_team_and_support_views(collab, fake) -> None:
    fake.add_server("bob", "bobs", "P-1")
    fake.add_server("carol", "other", "P-2")
    team = await collab.team_instances("bob")
    assert [(i["owner"], i["server"]) for i in team] == [("alice", "run")]
    assert [(i["owner"], i["server"]) for i in await collab.team_instances("alice")] == [("bob", "bobs")]
    assert {(i["owner"], i["server"]) for i in await collab.support_instances("erin")} == {
        ("alice", "run"), ("bob", "bobs"), ("carol", "other")}
    assert {(i["owner"], i["server"]) for i in await collab.support_instances("dave")} == {
        ("alice", "run"), ("bob", "bobs")}
    assert await collab.support_instances("carol") == []


# -- the proposal of an instance is the one it runs for, never a stopped record's options ----------

async def test_a_refused_start_does_not_lend_another_team(collab: Collaboration, fake: FakeHub) -> None:
    """alice's start for carol's proposal was refused: the stopped record still claims P-2."""
    fake.add_server("alice", "borrowed", "P-2", ready=False)
    with pytest.raises(CollabError) as e:
        await collab.add_member("alice", "alice", "borrowed", "carol", "user")
    assert e.value.status == 403 and fake.scopes_of("alice", "borrowed", "carol") == set()


async def test_patching_a_stopped_instance_keeps_the_proposal_it_ran_for(collab: Collaboration, fake: FakeHub) -> None:
    await collab.add_member("alice", "alice", "run", "bob", "user")  # running for P-1: bob is on the team
    server = fake.people["alice"]["servers"]["run"]
    server["ready"] = False  # stopped, then PATCH user_options {"proposal": "P-2"}
    server["user_options"] = {"proposal": "P-2"}
    with pytest.raises(CollabError) as e:
        await collab.add_member("alice", "alice", "run", "carol", "user")
    assert e.value.status == 403 and "P-1" in e.value.message
    assert await collab.reconcile() == 0  # bob keeps his place: the instance is still P-1's
    assert fake.scopes_of("alice", "run", "bob")


async def test_removing_someone_who_could_run_code_offers_a_restart(collab: Collaboration, fake: FakeHub) -> None:
    await collab.add_member("alice", "alice", "run", "bob", "user")
    await collab.change_role("alice", "alice", "run", "bob", "guest")  # demoted first: his processes live on
    out = await collab.remove_member("alice", "alice", "run", "bob")
    assert out["restart_suggested"] is True and "keep running" in out["message"]
    await collab.add_member("alice", "alice", "run", "dave", "guest")  # watched only: nothing to end
    assert (await collab.remove_member("alice", "alice", "run", "dave"))["restart_suggested"] is False


async def test_only_the_owner_restarts_and_the_instance_comes_back_with_its_settings(
        collab: Collaboration, fake: FakeHub, monkeypatch) -> None:
    calls = []

    async def stop_server(owner, server):
        calls.append(("stop", owner, server))
        fake.people[owner]["servers"][server]["ready"] = False

    async def start_server(owner, server, options):
        calls.append(("start", owner, server, options))

    fake.stop_server, fake.start_server = stop_server, start_server
    with pytest.raises(CollabError) as e:
        await collab.restart("bob", "alice", "run")
    assert e.value.status == 403 and calls == []
    await collab.restart("alice", "alice", "run")
    assert calls == [("stop", "alice", "run"), ("start", "alice", "run", {"proposal": "P-1"})]
    assert any(a["action"] == "restart" for a in audit(collab))


def test_the_owners_polls_need_a_sign_in_to_the_service_the_server_token_lacks() -> None:
    """`pending-requests` (which records the owner's polls) keeps the default HubOAuth scope check,
    `access:services!service=visa-collab`, which an instance's server token does not carry
    (see test_db_and_config); only the instance channel waives it."""
    from jupyterhub.services.auth import HubOAuthenticated

    from visa_collab.handlers import InstanceChannelHandler, PendingRequestsHandler
    assert PendingRequestsHandler.hub_scopes is HubOAuthenticated.hub_scopes
    assert InstanceChannelHandler.hub_scopes is not HubOAuthenticated.hub_scopes
