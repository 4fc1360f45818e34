"""Push instead of polling (issue 17, background traffic): the collaboration service's event
stream, the owner's presence it carries, and what idle open pages cost the hub (``-m fast``).

The service runs in this process, as `visa_collab.app` builds it, against a small HTTP hub
(`HttpHub`: the hub's REST API over `FakeHub`'s people) that counts every request it gets,
including the service's token checks. Pages read the stream over a plain socket, as a browser's
EventSource does.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import unquote

import pytest
import pytest_asyncio
from jupyterhub.services.auth import HubOAuth
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.httpserver import HTTPServer

from tests.collab.fakehub import FakeHub
from tests.support import ManualClock, free_port
from visa_collab import db
from visa_collab.app import make_app
from visa_collab.collab import Collaboration
from visa_collab.events import RESYNC, EventBus, request_notice
from visa_collab.hubapi import HubAPI

SERVICE = "/services/visa-collab/"
ACCESS = "access:services!service=visa-collab"


class HttpHub:
    """The few hub REST routes the service uses, over `FakeHub`, counting what it is asked."""

    def __init__(self, fake: FakeHub) -> None:
        self.fake = fake
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Api(web.RequestHandler):
            def prepare(self) -> None:
                hub.requests.append((self.request.method, self.request.path))

            def reply(self, model) -> None:
                if model is None:
                    raise web.HTTPError(404)
                self.set_header("Content-Type", "application/json")
                self.finish(json.dumps(model))

        class Whoami(Api):  # HubAuth: the person a token belongs to
            def get(self) -> None:
                token = self.request.headers.get("Authorization", "").removeprefix("token ")
                person = hub.fake.people.get(token.removeprefix("t-")) if token.startswith("t-") else None
                if person is None:
                    raise web.HTTPError(403)
                self.reply({**person, "scopes": [ACCESS]})

        class User(Api):
            def get(self, name: str) -> None:
                self.reply(hub.fake.people.get(unquote(name)))

        class Shares(Api):
            async def post(self, owner: str, server: str) -> None:
                body = json.loads(self.request.body)
                self.reply(await hub.fake.grant(unquote(owner), unquote(server), body["user"], body["scopes"]))

            async def patch(self, owner: str, server: str) -> None:
                body = json.loads(self.request.body)
                self.reply(await hub.fake.revoke(unquote(owner), unquote(server), body["user"], body.get("scopes")))

        self.app = web.Application([
            (r"/hub/api/user", Whoami),
            (r"/hub/api/users/([^/?]+)", User),
            (r"/hub/api/shares/([^/]+)/([^/]+)", Shares),
        ])

    def count(self) -> int:
        return len(self.requests)


class Page:
    """One open page's event stream (HTTP/1.0: the body is the stream, until either side closes)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int) -> None:
        self.reader, self.writer, self.status = reader, writer, status
        self.keepalives = 0
        self.retry: int | None = None

    @classmethod
    async def open(cls, port: int, person: str, query: str = "") -> Page:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {SERVICE}api/events{query} HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                     f"Authorization: token t-{person}\r\nAccept: text/event-stream\r\n\r\n".encode())
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        page = cls(reader, writer, int(head.split()[1]))
        assert page.status != 200 or "text/event-stream" in head, head
        return page

    async def event(self, timeout: float = 10) -> tuple[str, object]:
        """The next event (name, parsed data); keep-alive comments are counted on the way."""
        return await asyncio.wait_for(self._event(), timeout)

    async def _event(self) -> tuple[str, object]:
        name, data = "message", []
        while True:
            line = (await self.reader.readline()).decode()
            if not line:
                raise EOFError("the stream ended")
            line = line.rstrip("\n")
            if line.startswith(":"):
                self.keepalives += 1
            elif line.startswith("retry: "):
                self.retry = int(line[7:])
            elif line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line == "" and data:
                return name, json.loads("\n".join(data))

    async def idle(self, keepalives: int, timeout: float = 10) -> None:
        """Read keep-alives until `keepalives` more came; any event in between fails the test."""
        async def _wait() -> None:
            target = self.keepalives + keepalives
            while self.keepalives < target:
                line = (await self.reader.readline()).decode()
                assert line.startswith(":") or line == "\n", f"an idle page was sent {line!r}"
                if line.startswith(":"):
                    self.keepalives += 1
        await asyncio.wait_for(_wait(), timeout)

    async def body(self) -> dict:
        return json.loads(await asyncio.wait_for(self.reader.read(), 10))

    def close(self) -> None:
        self.writer.close()


class Service:
    def __init__(self, collab: Collaboration, hub: HttpHub, port: int) -> None:
        self.collab, self.hub, self.port = collab, hub, port
        self.pages: list[Page] = []

    async def page(self, person: str, query: str = "") -> Page:
        page = await Page.open(self.port, person, query)
        self.pages.append(page)
        return page

    async def close_pages(self) -> None:
        """Close every page and wait for the service to end their streams."""
        for page in self.pages:
            page.close()
        await wait_until(lambda: self.collab.events.subscribers() == 0, what="every stream to end")

    async def call(self, person: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        try:
            r = await AsyncHTTPClient().fetch(
                f"http://127.0.0.1:{self.port}{SERVICE}api/{path}", method=method,
                headers={"Authorization": f"token t-{person}", "Content-Type": "application/json"},
                body=None if method == "GET" else json.dumps(body or {}))
        except HTTPClientError as e:
            assert e.response is not None
            return e.code, json.loads(e.response.body)
        return r.code, json.loads(r.body)


@pytest.fixture
def fake() -> FakeHub:
    h = FakeHub()
    h.add_person("alice", ["proposal:P-1", "role:user"])
    h.add_person("dave", ["proposal:P-1", "role:instrument_scientist", "role:staff"])
    h.add_person("erin", ["role:it_support", "role:staff"])
    h.add_server("alice", "run", "P-1")
    h.add_server("alice", "fit", "P-1")
    return h


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@asynccontextmanager
async def start_service(tmp_path, fake: FakeHub, clock: ManualClock, request_ttl: float = 300.0
                        ) -> AsyncIterator[Service]:
    http_hub = HttpHub(fake)
    hub_server = HTTPServer(http_hub.app)
    hub_port = free_port()
    hub_server.listen(hub_port, "127.0.0.1")
    api_url = f"http://127.0.0.1:{hub_port}/hub/api"
    engine = db.connect(f"sqlite:///{tmp_path / 'c.sqlite'}")
    db.migrate(engine)
    collab = Collaboration(engine, HubAPI(api_url, "service-token", cache_ttl=30.0), service_prefix=SERVICE,
                           monotonic=clock, request_ttl=request_ttl)
    HubOAuth.clear_instance()
    HubOAuth.instance(api_url=api_url, api_token="service-token", access_scopes={ACCESS},
                      oauth_client_id="service-visa-collab", cache_max_age=300)
    app = make_app(collab, SERVICE, "/hub/", b"x" * 32, events_keepalive=0.05)
    server = HTTPServer(app)
    port = free_port()
    server.listen(port, "127.0.0.1")
    service = Service(collab, http_hub, port)
    try:
        yield service
    finally:
        await service.close_pages()
        server.stop()
        hub_server.stop()
        HubOAuth.clear_instance()
        engine.dispose()


@pytest_asyncio.fixture(loop_scope="function")  # the tests' own loop: the servers run on it
async def service(tmp_path, fake, clock) -> AsyncIterator[Service]:
    async with start_service(tmp_path, fake, clock) as s:
        yield s


async def wait_until(predicate, timeout: float = 10, what: str = "a condition") -> None:
    """The event loop's own `wait_for`: the service runs on this loop, so poll without blocking it."""
    async def _poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)
    try:
        await asyncio.wait_for(_poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


# -- what idle pages cost the hub --------------------------------------------------------------

async def test_idle_open_pages_cost_the_hub_no_request(service: Service, fake: FakeHub) -> None:
    """12 people with a home page and two desktop prompts open each (36 streams): opening them
    costs each person a token check and one look-up of their servers; then 40 keep-alive rounds
    (what 20 minutes are with the 30 s default) cost the hub nothing at all."""
    people = [f"p{i}" for i in range(12)]
    for name in people:
        fake.add_person(name, ["proposal:P-1", "role:user"])
        fake.add_server(name, "a", "P-1")
        fake.add_server(name, "b", "P-1")
    pages = []
    for name in people:
        pages += [await service.page(name), await service.page(name, "?server=a"),
                  await service.page(name, "?server=b")]
    for page in pages:
        assert page.status == 200
        assert await page.event() == ("pending", [])
        assert page.retry == 3000  # the browser reconnects by itself
    opened = service.hub.count()
    by_kind = {(m, p.rsplit("/", 1)[0]) for m, p in service.hub.requests}
    assert by_kind == {("GET", "/hub/api"), ("GET", "/hub/api/users")}, service.hub.requests
    assert opened == 2 * len(people), service.hub.requests  # a token check + the servers' names, per person
    await asyncio.gather(*(page.idle(40) for page in pages))
    assert service.hub.count() == opened, service.hub.requests[opened:]
    for page in pages:
        page.close()


async def test_the_old_poll_costs_at_most_one_look_up_per_person_per_cache_ttl(
        service: Service, fake: FakeHub) -> None:
    """Pages not yet on the stream (an old tab) still poll `pending-requests`: the hub is asked
    about the person once per `cache_ttl`, not once per poll."""
    for _ in range(20):
        assert (await service.call("alice", "GET", "pending-requests"))[0] == 200
    users = [p for _, p in service.hub.requests if p.startswith("/hub/api/users/")]
    assert users == ["/hub/api/users/alice"]


async def test_hub_cache(fake: FakeHub, clock: ManualClock, tmp_path) -> None:
    """Cached only when the caller accepts it and within the TTL; forgotten after our writes;
    never for a server in transition or inside `fresh()`; one request for a burst."""
    async with start_service(tmp_path, fake, clock) as s:
        hub = s.collab.hub
        hub.monotonic = clock
        users = lambda: [p for _, p in s.hub.requests if p.startswith("/hub/api/users/")]  # noqa: E731
        await hub.user("alice", max_age=30)
        await hub.user("alice", max_age=30)
        assert len(users()) == 1
        await hub.user("alice")  # decisions read fresh (and refresh the cache)
        assert len(users()) == 2
        clock.t += 31
        await hub.user("alice", max_age=30)
        assert len(users()) == 3
        await hub.grant("alice", "run", "erin", ["access:servers!server=alice/run"])
        await hub.user("alice", max_age=30)
        assert len(users()) == 4, "our own write forgets what we had about alice"
        with hub.fresh():
            await hub.user("alice", max_age=30)
        assert len(users()) == 5
        await asyncio.gather(*(hub.user("dave", max_age=30) for _ in range(10)))
        assert users().count("/hub/api/users/dave") == 1
        fake.people["alice"]["servers"]["run"]["pending"] = "stop"
        await hub.user("alice")
        await hub.user("alice", max_age=30)
        assert len(users()) == 8, "a server starting or stopping is read every time"
        assert (await hub.user("nobody", max_age=30)) is None


# -- push ------------------------------------------------------------------------------------

async def test_requests_are_pushed_to_the_owner_and_the_requester(service: Service, fake: FakeHub) -> None:
    collab = service.collab
    await collab.wait_room("alice", "run", None, 0)  # the instance runs: its room exists
    prompt = await service.page("alice", "?server=run")
    home = await service.page("alice")
    other = await service.page("alice", "?server=fit")
    for page in (prompt, home, other):
        assert await page.event() == ("pending", [])
    await wait_until(lambda: collab.owner_present("alice", "run"), what="the open prompt to make alice present")

    status, req = await service.call("dave", "POST", "instances/alice/run/requests")
    assert status == 200 and req["status"] == "pending", req
    for page in (prompt, home):
        name, pending = await page.event(timeout=2)
        assert name == "pending" and [r["id"] for r in pending] == [req["id"]]
        assert pending[0]["requester"] == "dave" and pending[0]["status"] == "pending"
    waiting = await service.page("dave", f"?request={req['id']}")
    assert (await waiting.event()) == ("request", {k: req[k] for k in req if k != "instance"})

    status, decided = await service.call("alice", "POST", f"requests/{req['id']}/decision", {"decision": "read-only"})
    assert status == 200 and decided["status"] == "read-only"
    name, model = await waiting.event(timeout=2)
    assert name == "request" and model["status"] == "read-only" and model["decided_by"] == "alice"
    assert await waiting.reader.read() == b"", "the requester's stream ends with the answer"
    for page in (prompt, home):
        assert await page.event(timeout=2) == ("pending", [])
    await other.idle(3)  # nothing about another instance's requests
    assert "custom:visa-guest!server=alice/run" in fake.scopes_of("alice", "run", "dave")
    for page in (prompt, home, other, waiting):
        page.close()


async def test_an_expired_request_is_pushed(tmp_path, fake: FakeHub, clock: ManualClock) -> None:
    async with start_service(tmp_path, fake, clock, request_ttl=0.3) as service:
        await service.collab.wait_room("alice", "run", None, 0)
        prompt = await service.page("alice", "?server=run")
        assert await prompt.event() == ("pending", [])
        await wait_until(lambda: service.collab.owner_present("alice", "run"), what="alice present")
        _, req = await service.call("erin", "POST", "instances/alice/run/requests")
        waiting = await service.page("erin", f"?request={req['id']}")
        assert (await waiting.event())[1]["status"] == "pending"
        assert [r["id"] for r in (await prompt.event())[1]] == [req["id"]]
        name, model = await waiting.event(timeout=5)
        assert name == "request" and model["status"] == "expired"
        assert await prompt.event(timeout=5) == ("pending", [])
        prompt.close()
        waiting.close()


async def test_a_stream_that_falls_behind_is_told_to_read_everything_again() -> None:
    bus = EventBus()
    with bus.subscribe("alice") as slow, bus.subscribe("alice") as other, bus.subscribe("dave"):
        for rid in range(100):
            bus.publish(["alice"], request_notice(rid, "alice", "run", "erin"))
        assert slow.queue.get_nowait() == RESYNC and slow.queue.qsize() < 64
        assert bus.subscribers("alice") == 2 and bus.subscribers() == 3
        other.close()
        items = [other.queue.get_nowait() for _ in range(other.queue.qsize())]
        assert other.closed and items[-1] is None
    assert bus.subscribers() == 0


# -- presence ----------------------------------------------------------------------------------

async def test_an_open_stream_is_the_owners_presence(service: Service, clock: ManualClock) -> None:
    collab = service.collab
    await collab.wait_room("alice", "run", None, 0)
    assert not collab.owner_present("alice", "run")
    prompt = await service.page("alice", "?server=run")
    await prompt.event()
    assert collab.owner_present("alice", "run")
    clock.t += collab.owner_page_ttl + 1  # a long time with the page open, idle
    assert not collab.owner_present("alice", "run")
    await prompt.idle(1)
    await wait_until(lambda: collab.owner_present("alice", "run"), what="the keep-alive to renew her presence")
    prompt.close()
    await wait_until(lambda: collab.events.subscribers("alice") == 0, what="the stream to end")
    assert collab.owner_present("alice", "run"), "present for owner_page_ttl after the page closed"
    clock.t += collab.owner_page_ttl - 1
    assert collab.owner_present("alice", "run")
    clock.t += 2
    assert not collab.owner_present("alice", "run")
    assert (await service.call("erin", "POST", "instances/alice/run/requests"))[1]["status"] == "full"


async def test_someone_elses_stream_does_not_make_the_owner_present(service: Service) -> None:
    await service.collab.wait_room("alice", "run", None, 0)
    page = await service.page("dave", "?server=run")
    await page.event()
    await page.idle(2)
    assert not service.collab.owner_present("alice", "run")
    page.close()


# -- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("query, status", [
    ("?request=abc", 400), ("?request=-1", 400), ("?request=1", 404), ("?request=99999999999999999999999", 404),
])
async def test_bad_streams_are_refused_with_json(service: Service, query: str, status: int) -> None:
    page = await service.page("dave", query)
    assert page.status == status
    assert (await page.body())["status"] == status
    page.close()


async def test_another_persons_request_is_not_theirs_to_follow(service: Service) -> None:
    await service.collab.wait_room("alice", "run", None, 0)
    owner = await service.page("alice", "?server=run")
    await owner.event()
    await wait_until(lambda: service.collab.owner_present("alice", "run"), what="alice present")
    _, req = await service.call("dave", "POST", "instances/alice/run/requests")
    nosy = await service.page("erin", f"?request={req['id']}")
    assert nosy.status == 404 and "No such access request" in (await nosy.body())["message"]
    owner.close()
    nosy.close()


# -- metrics: sessions by role and open streams, counted from memory --------------------------
async def scrape(service: Service, person: str) -> tuple[int, str]:
    try:
        r = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{service.port}{SERVICE}metrics",
                                          headers={"Authorization": f"token t-{person}"})
    except HTTPClientError as e:
        return e.code, ""
    return r.code, r.body.decode()


async def test_sessions_by_role_and_open_streams_for_admins_only(service: Service, fake) -> None:
    fake.add_person("root", ["role:admin"], admin=True)
    await service.collab.report("alice", "run", [
        {"user": "alice", "role": "owner", "channel": "desktop"},
        {"user": "bob", "role": "guest", "channel": "desktop", "view_only": True},
        {"user": "dave", "role": "support", "channel": "lab"},
    ], [])
    await service.page("alice", "?server=run")
    status, text = await scrape(service, "root")
    assert status == 200
    assert 'visa_collab_sessions{role="owner"} 1.0' in text
    assert 'visa_collab_sessions{role="guest"} 1.0' in text
    assert 'visa_collab_sessions{role="support"} 1.0' in text
    assert "visa_collab_occupied_instances 1.0" in text
    assert "visa_collab_event_streams 1.0" in text
    assert (await scrape(service, "alice"))[0] == 403


async def test_sessions_older_than_the_presence_ttl_are_not_counted(service: Service, fake, clock) -> None:
    fake.add_person("root", ["role:admin"], admin=True)
    await service.collab.report("alice", "run", [{"user": "alice", "role": "owner", "channel": "lab"}], [])
    clock.t += service.collab.presence_ttl + 1
    status, text = await scrape(service, "root")
    assert status == 200 and "visa_collab_sessions{" not in text and "visa_collab_occupied_instances 0.0" in text
