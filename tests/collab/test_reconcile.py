"""The periodic reconciliation (issue 17, idle load): one pass decides from one snapshot of the
hub, so what it costs the hub does not grow with the number of instances per person, and it
still makes every revocation (with its audit reason) it made when it asked per instance."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import unquote

import pytest
from tornado import web
from tornado.httpserver import HTTPServer

from tests.collab.fakehub import FakeHub
from tests.collab.test_collab_rules import Clock, audit
from tests.support import free_port
from visa_collab import db
from visa_collab.collab import Collaboration
from visa_collab.hubapi import HubAPI
from visa_collab.roles import Role, share_scopes


def make_collab(tmp_path, hub) -> Collaboration:
    engine = db.connect(f"sqlite:///{tmp_path / 'c.sqlite'}")
    db.migrate(engine)
    clock = Clock()
    return Collaboration(engine, hub, now=clock.now, monotonic=clock.mono)


def revocations(fake: FakeHub) -> set[tuple[str, str, str]]:
    return {(o, s, m) for (what, o, s, m, _scopes) in fake.calls if what == "revoke"}


@pytest.fixture
def fake() -> FakeHub:
    h = FakeHub()
    for name in ("alice", "bob", "dave"):
        h.add_person(name, ["proposal:P-1", "role:user"] + (["role:instrument_scientist"] if name == "dave" else []))
    h.add_person("carol", ["proposal:P-2", "role:user"])
    h.add_person("erin", ["role:it_support", "role:staff"])
    for owner, server, proposal in [("alice", "run", "P-1"), ("alice", "fit", "P-1"), ("bob", "b1", "P-1"),
                                    ("carol", "c1", "P-2")]:
        h.add_server(owner, server, proposal)
    return h


async def test_a_pass_reads_one_snapshot_and_revokes_as_before(tmp_path, fake: FakeHub) -> None:
    collab = make_collab(tmp_path, fake)
    for owner, server, member, role in [("alice", "run", "bob", "user"), ("alice", "run", "erin", "support"),
                                        ("alice", "fit", "dave", "support"), ("alice", "fit", "bob", "guest"),
                                        ("bob", "b1", "alice", "user"), ("bob", "b1", "erin", "support"),
                                        ("carol", "c1", "erin", "support")]:
        await collab.add_member(owner, owner, server, member, role)
    fake.reads.clear()
    assert await collab.reconcile() == 0
    # 4 members, 3 owners: the owners' share listings are fewer
    assert fake.reads == [("users",), ("shares", "alice"), ("shares", "bob"), ("shares", "carol")]

    fake.people["bob"]["groups"].remove("proposal:P-1")  # left the team
    fake.people["erin"]["groups"].remove("role:it_support")  # no longer support staff
    await fake.revoke("alice", "fit", "dave")  # removed in the hub directly
    del fake.people["carol"]["servers"]["c1"]  # deleted (its shares went with it)
    fake.share_table.pop(("carol", "c1", "erin"))
    fake.calls.clear()
    fake.reads.clear()
    assert await collab.reconcile() == 6  # 4 revoked, 1 share and 1 instance gone
    assert fake.reads == [("users",), ("shares", "alice"), ("shares", "bob")]  # c1 is gone: nothing to list
    assert revocations(fake) == {("alice", "run", "bob"), ("alice", "fit", "bob"), ("alice", "run", "erin"),
                                 ("bob", "b1", "erin")}
    reasons = {(a["owner"], a["server"], a["member"]): json.loads(a["detail"])["reason"]
               for a in audit(collab)[-5:] if a["action"] == "revoke"}
    assert reasons == {
        ("alice", "run", "bob"): "left the team of proposal P-1",
        ("alice", "fit", "bob"): "left the team of proposal P-1",
        ("alice", "run", "erin"): "no longer facility support staff for this proposal",
        ("bob", "b1", "erin"): "no longer facility support staff for this proposal",
        ("alice", "fit", "dave"): "share removed in the hub",
    }
    assert [g["member"] for g in await collab.active_grants("bob", "b1")] == ["alice"]
    assert await collab.active_grants("carol", "c1") == []  # forgotten: instance deleted
    fake.calls.clear()
    assert await collab.reconcile() == 0 and fake.calls == []


async def test_a_member_missing_from_the_hub_loses_the_grant(tmp_path, fake: FakeHub) -> None:
    collab = make_collab(tmp_path, fake)
    await collab.add_member("alice", "alice", "run", "bob", "user")
    del fake.people["bob"]  # as `person() is None`: the share is still listed, the person is not
    assert await collab.reconcile() == 1
    assert revocations(fake) == {("alice", "run", "bob")}


async def test_few_support_staff_on_many_owners_are_listed_per_member(tmp_path, fake: FakeHub) -> None:
    collab = make_collab(tmp_path, fake)
    for owner in ("alice", "bob", "carol"):
        for server in list(fake.people[owner]["servers"]):
            await collab.add_member(owner, owner, server, "erin", "support")
    fake.reads.clear()
    assert await collab.reconcile() == 0
    assert fake.reads == [("users",), ("shared", "erin")]


async def test_a_grant_revoked_during_the_pass_keeps_its_reason(tmp_path, fake: FakeHub) -> None:
    """The snapshot is taken after the grants are read: the owner may remove someone meanwhile."""
    collab = make_collab(tmp_path, fake)
    await collab.add_member("alice", "alice", "run", "bob", "user")
    snapshot = collab.hub_snapshot

    async def remove_first(grants):
        await collab.remove_member("alice", "alice", "run", "bob")
        return await snapshot(grants)

    collab.hub_snapshot = remove_first
    assert await collab.reconcile() == 0
    last = audit(collab)[-1]
    assert last["actor"] == "alice" and "removed by the owner" in last["detail"]


# -- over HTTP: what a pass costs the hub, counted -------------------------------------------------

class ListingHub:
    """The hub's listings (users: a plain list; shares: ``items`` + ``_pagination``) over `FakeHub`."""

    def __init__(self, fake: FakeHub) -> None:
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Api(web.RequestHandler):
            def prepare(self) -> None:
                hub.requests.append((self.request.method, self.request.uri))

            def page(self, items: list) -> tuple[list, int, int]:
                offset, limit = int(self.get_argument("offset", "0")), min(int(self.get_argument("limit", "200")), 200)
                return items[offset:offset + limit], offset, limit

            def paginated(self, items: list) -> None:
                chunk, offset, limit = self.page(items)
                following = {"offset": offset + limit, "limit": limit} if offset + limit < len(items) else None
                self.finish({"items": chunk, "_pagination": {"offset": offset, "limit": limit,
                                                             "total": len(items), "next": following}})

        class Users(Api):
            def get(self) -> None:
                self.set_header("Content-Type", "application/json")
                self.finish(json.dumps(self.page(list(fake.people.values()))[0]))

        class Shared(Api):
            def get(self, member: str) -> None:
                self.paginated(fake.share_items(member=unquote(member)))

        class OwnerShares(Api):
            def get(self, owner: str) -> None:
                self.paginated(fake.share_items(owner=unquote(owner)))

        class ServerShares(Api):
            async def patch(self, owner: str, server: str) -> None:
                body = json.loads(self.request.body)
                self.finish(await fake.revoke(unquote(owner), unquote(server), body["user"], body.get("scopes")))

        self.app = web.Application([
            (r"/hub/api/users", Users), (r"/hub/api/users/([^/]+)/shared", Shared),
            (r"/hub/api/shares/([^/]+)", OwnerShares), (r"/hub/api/shares/([^/]+)/([^/]+)", ServerShares),
        ])


@asynccontextmanager
async def serve(fake: FakeHub) -> AsyncIterator[tuple[ListingHub, str]]:
    """A `ListingHub` listening in this test's event loop, and its API URL."""
    hub = ListingHub(fake)
    server = HTTPServer(hub.app)
    port = free_port()
    server.listen(port, "127.0.0.1")
    try:
        yield hub, f"http://127.0.0.1:{port}/hub/api"
    finally:
        server.stop()


def pages(items: int, size: int, plain: bool) -> int:
    """Requests a paged listing of `items` costs (a plain list ends on its first short page)."""
    return items // size + 1 if plain else max(1, -(-items // size))


@pytest.mark.parametrize("per_owner", [2, 6])
async def test_a_pass_costs_pages_not_instances(tmp_path, fake: FakeHub, per_owner: int) -> None:
    async with serve(fake) as (hub, url):
        await check_pass_cost(tmp_path, fake, hub, url, per_owner)


async def check_pass_cost(tmp_path, fake: FakeHub, hub: ListingHub, url: str, per_owner: int) -> None:
    owners = [f"owner{i}" for i in range(7)]
    for owner in owners:
        fake.add_person(owner, ["proposal:P-1", "role:user"])
        for n in range(per_owner):
            fake.add_server(owner, f"s{n}", "P-1")
    collab = make_collab(tmp_path, HubAPI(url, "service-token", page_size=4))
    for owner in owners:  # recorded as the service records grants (the hub side is `fake`)
        for n in range(per_owner):
            await fake.grant(owner, f"s{n}", "erin", share_scopes(Role.SUPPORT, owner, f"s{n}"))
            await collab.database.run(lambda conn, o=owner, s=f"s{n}": conn.execute(db.grants.insert().values(
                owner=o, server=s, member="erin", role="support", granted_by=o, source="direct",
                created_at=collab.now())))
    instances = len(owners) * per_owner
    expected = pages(len(fake.people), 4, plain=True) + pages(instances, 4, plain=False)  # one member: erin

    assert await collab.reconcile() == 0
    assert len(hub.requests) == expected, hub.requests
    assert expected < 3 * instances  # what asking per instance cost
    assert all(method == "GET" for method, _ in hub.requests)

    hub.requests.clear()
    fake.people["erin"]["groups"].remove("role:it_support")
    assert await collab.reconcile() == instances
    assert [m for m, _ in hub.requests].count("GET") == expected  # reads: the same; writes: the revocations
    assert [m for m, _ in hub.requests].count("PATCH") == instances
    assert not any(m == "erin" for (_o, _s, m) in fake.share_table)
