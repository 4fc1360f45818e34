"""The admin console over HTTP: the visa-ops app on a port, a hub database written with
jupyterhub.orm, and a stand-in for the hub's REST API (tokens → people, capacity) in a thread.

Every console route: 403 for a non-admin, 200 for an admin (hub admin, or `custom:visa-admin`
in the token, or group `role:admin` asked of the hub); filters return the right rows; user text
is escaped; a cookie-authenticated POST without the XSRF token is refused."""
from __future__ import annotations

import json
import mailbox
import re
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from html import unescape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import pytest
import pytest_asyncio
from jupyterhub import orm
from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPResponse
from tornado.httpserver import HTTPServer

from tests.support import free_port
from visa_ops.console_samples import series_sync
from visa_ops.handlers import make_handlers
from visa_ops.mail import Mailer
from visa_ops.ops import Operations, OpsHubAPI
from visa_ops.policy import LifecyclePolicy
from visa_ops.store import Store
from visa_spawner.plan_switch import read_disabled

pytestmark = pytest.mark.asyncio(loop_scope="session")  # the app's server runs on the tests' loop
PREFIX = "/services/visa-ops/"
NOW = datetime(2026, 12, 3, 12, 0)  # naive UTC, the service's clock
ROUTES = ["admin/", "admin/instances", "admin/sessions", "admin/plans", "admin/notifications",
          "admin/extensions", "admin/outbox", "admin/users"]
ACCESS = "access:services!service=visa-ops"
PLANS = [
    {"id": "sandbox-small", "display_name": "Small sandbox", "backend": "sandbox"},
    {"id": "qemu-gpu", "display_name": "GPU VM", "backend": "qemu", "gpus": 1},
    {"id": "qemu-std", "display_name": "Standard VM", "backend": "qemu"},
]


class FakeHubAPI:
    """The hub's REST API as the service uses it: who a token is, people, capacity."""

    def __init__(self) -> None:
        self.tokens: dict[str, dict] = {}
        self.others = {"alice": {"kind": "user", "name": "alice", "auth_state": {"visa": {"quota": 3}}},
                       "dave": {"kind": "user", "name": "dave", "auth_state": {"visa": {"quota": -1}}}}
        # the shape of visa_spawner.capacity.capacity_report
        self.capacity: tuple[int, dict] = (200, {
            "backends": {"sandbox": {"instances_running": 33, "gpus_free": 0, "slots": 40},
                         "qemu": {"instances_running": 2, "gpus_free": 0, "slots": 4, "used": 4}},
            "plans": [{**p, "gpus": p.get("gpus", 0), "enabled": True, "available": True, "why": ""}
                      for p in PLANS]})
        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def person(self, name: str, admin: bool = False, groups: tuple = (), scopes: tuple = ()) -> str:
        token = secrets.token_hex(16)
        self.tokens[token] = {"kind": "user", "name": name, "admin": admin, "groups": list(groups),
                              "scopes": [ACCESS, *scopes], "servers": {}}
        return token

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                token = self.headers.get("Authorization", "").split(" ", 1)[-1]
                status, body = 404, {"message": "not found"}
                if self.path == "/hub/api/user" and token in hub.tokens:
                    status, body = 200, hub.tokens[token]
                elif self.path.startswith("/hub/api/users/"):
                    name = self.path.split("/")[4].split("?")[0]
                    found = [m for m in [*hub.tokens.values(), *hub.others.values()] if m["name"] == name]
                    status, body = (200, found[0]) if found else (404, {"message": "no such user"})
                elif self.path == "/hub/api/visa/capacity":
                    status, body = hub.capacity
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def seed_hub_db(path: Path) -> str:
    """A hub database written by JupyterHub's own ORM: 60 of carol's, and a few others."""
    url = f"sqlite:///{path}"
    engine = create_engine(url)
    orm.Base.metadata.create_all(engine)
    now = NOW
    with Session(engine) as db:
        staff = orm.Group(name="role:staff")
        people = {n: orm.User(name=n) for n in ("alice", "bob", "carol", "dave")}
        people["alice"].groups.append(staff)
        db.add_all([staff, *people.values()])
        db.flush()

        def add(owner: str, name: str, proposal: str, plan: str, running: bool, age_days: float,
                idle_days: float | None, instruments=("D22",), backend="sandbox") -> None:
            created = now - timedelta(days=age_days)
            sp = orm.Spawner(user_id=people[owner].id, name=name, display_name=name.title(),
                             user_options={"proposal": proposal, "plan": plan, "instruments": list(instruments)},
                             state={"identity": {"backend": backend},
                                    "backend": {"created": created.replace(tzinfo=UTC).timestamp()}},
                             started=created if running else None,  # the hub clears it on stop
                             last_activity=None if idle_days is None else now - timedelta(days=idle_days))
            if running:
                sp.server = orm.Server(ip="127.0.0.1", port=free_port(), base_url=f"/user/{owner}/{name}/")
            db.add(sp)

        add("alice", "reduce", "P-2026-011", "sandbox-small", True, 2, 0.001)
        add("alice", "old-fit", "P-2026-011", "qemu-std", True, 30, 10, ("IN5",), "qemu")
        add("bob", "<b>bold</b>", "P-2026-007", "sandbox-small", False, 1, None, ("IN5", "D22"))
        add("dave", "gpu", "P-2026-007", "qemu-gpu", True, 5, 3, ("D11",), "qemu")
        for n in range(60):
            add("carol", f"c{n:02d}", "P-2026-099", "sandbox-large", n % 2 == 0, n, n / 2)
        db.commit()
    engine.dispose()
    return url


@pytest.fixture(scope="module")
def fake_hub() -> Iterator[FakeHubAPI]:
    hub = FakeHubAPI()
    yield hub
    hub.server.shutdown()


@pytest.fixture(scope="module")
def hub_oauth(fake_hub: FakeHubAPI) -> Iterator[HubOAuth]:
    """The process-wide HubOAuth the handlers use, pointed at the fake hub for this module."""
    auth = HubOAuth.instance()
    saved = {k: getattr(auth, k) for k in ("api_url", "api_token", "oauth_client_id", "access_scopes", "base_url")}
    auth.api_url = f"http://127.0.0.1:{fake_hub.port}/hub/api"
    auth.api_token = "service-token"
    auth.oauth_client_id = "service-visa-ops"
    auth.access_scopes = {ACCESS}
    auth.base_url = PREFIX
    yield auth
    for k, v in saved.items():
        if v:  # an empty api_token or client id is refused by HubOAuth's validators
            setattr(auth, k, v)


class Console:
    """The service app on a port, with its Operations, and a client per person."""

    def __init__(self, tmp: Path, fake_hub: FakeHubAPI) -> None:
        self.tmp, self.fake_hub = tmp, fake_hub
        self.switch_file = tmp / "plans-disabled.json"
        self.maildir = tmp / "outbox"
        self.store = Store.from_url(f"sqlite:///{tmp / 'ops.sqlite'}", clock=lambda: NOW)
        self.ops = Operations(
            self.store, LifecyclePolicy(clock=lambda: NOW),
            OpsHubAPI(f"http://127.0.0.1:{fake_hub.port}/hub/api", "service-token", timeout=3, retries=1),
            seed_hub_db(tmp / "jupyterhub.sqlite"), Mailer(),
            plan_backends={p["id"]: p["backend"] for p in PLANS},
        )
        self.cookie_secret = secrets.token_bytes(32)
        self.app = app = web.Application(
            make_handlers(PREFIX, HubOAuthCallbackHandler), ops=self.ops, service_prefix=PREFIX,
            hub_prefix="/hub/", cookie_secret=self.cookie_secret, xsrf_cookies=False, plans=PLANS,
            plan_switch_file=str(self.switch_file), outbox_maildir=str(self.maildir),
        )
        self.port = free_port()
        self.server = HTTPServer(app)
        self.server.listen(self.port, "127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port}{PREFIX}"

    async def get(self, token: str, path: str, **kw) -> HTTPResponse:
        return await AsyncHTTPClient().fetch(self.url + path, headers={"Authorization": f"token {token}"},
                                             raise_error=False, follow_redirects=False, **kw)

    def cookie(self, token: str) -> str:
        """The service's own login cookie for `token`, as its OAuth callback would set it."""
        value = web.create_signed_value(self.cookie_secret, "service-visa-ops", token).decode()
        return f"service-visa-ops={value}"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def console(tmp_path_factory, fake_hub: FakeHubAPI, hub_oauth: HubOAuth) -> AsyncIterator[Console]:
    c = Console(tmp_path_factory.mktemp("console"), fake_hub)
    yield c
    c.server.stop()
    sampler = c.app.settings.get("console_sampler")
    if sampler is not None:  # started by the first console request
        sampler.cancel()


@pytest.fixture(scope="module")
def people(fake_hub: FakeHubAPI) -> dict[str, str]:
    return {
        "root": fake_hub.person("root", admin=True),
        "ada": fake_hub.person("ada", scopes=("custom:visa-admin",)),
        "grace": fake_hub.person("grace", groups=("role:admin",)),  # admin through the hub's groups only
        "bob": fake_hub.person("bob", groups=("role:user",)),
        "eve": fake_hub.person("eve", groups=("role:staff",), scopes=("custom:visa-support",)),
    }


def rows(body: bytes) -> list[tuple[str, str]]:
    html = body.decode()
    return [(unescape(o), unescape(s)) for o, s in re.findall(r'<tr data-owner="([^"]*)" data-server="([^"]*)"', html)]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("who", ["bob", "eve"])
async def test_every_console_route_is_403_for_non_admins(console: Console, people, route: str, who: str) -> None:
    r = await console.get(people[who], route)
    assert r.code == 403, (route, who, r.code)
    assert "Administrators only." in r.body.decode()
    assert 'id="visa-admin-nav"' in r.body.decode() and "Dashboard" not in r.body.decode()  # no console links


async def test_a_post_from_a_non_admin_is_403_and_changes_nothing(console: Console, people) -> None:
    r = await console.get(people["bob"], "admin/plans", method="POST",
                           body=urlencode({"plan": "qemu-std", "enabled": "no"}))
    assert r.code == 403
    assert read_disabled(console.switch_file) == set()


async def test_without_sign_in_pages_send_you_to_the_hub_login(console: Console) -> None:
    r = await AsyncHTTPClient().fetch(console.url + "admin/instances", raise_error=False, follow_redirects=False)
    assert r.code == 302 and "/hub/api/oauth2/authorize" in r.headers["Location"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("who", ["root", "ada", "grace"])
async def test_every_console_route_works_for_admins(console: Console, people, route: str, who: str) -> None:
    r = await console.get(people[who], route)
    assert r.code == 200, (route, who, r.code, r.body[:500])
    assert '<link rel="stylesheet" href="/hub/static/css/style.min.css">' in r.body.decode()


async def test_dashboard_counts_capacity_and_plot(console: Console, people) -> None:
    r = await console.get(people["root"], "admin/")
    html = r.body.decode()
    # running: alice 2, dave 1, carol 30 (even n); stopped: bob 1, carol 30
    assert 'data-state="running">33<' in html and 'data-state="stopped">31<' in html
    assert re.search(r"<td>sandbox-large</td><td class=\"text-end\">30</td>", html)
    assert 'data-known="true"' in html and "slots: <strong>40</strong>" in html
    assert "<svg" in html and "<polyline" in html  # the sample this visit took
    assert series_sync(console.store.engine, NOW - timedelta(days=1)) == [(NOW, 33)]
    # alice used "reduce" 1.4 minutes ago, carol "c00" just now; dave's last use was 3 days ago
    assert 'id="visa-active-count">2<' in html
    assert re.findall(r'<span class="badge bg-secondary me-1">([^<]*)</span>', html) == ["alice", "carol"]


async def test_dashboard_says_unknown_when_capacity_fails(console: Console, people, fake_hub: FakeHubAPI) -> None:
    saved, fake_hub.capacity = fake_hub.capacity, (500, {"message": "boom"})
    try:
        r = await console.get(people["root"], "admin/")
    finally:
        fake_hub.capacity = saved
    assert r.code == 200
    assert 'id="visa-capacity" data-known="false"' in r.body.decode() and "unknown" in r.body.decode()


@pytest.mark.parametrize(("query", "expected"), [
    ({"user": "alice"}, {("alice", "reduce"), ("alice", "old-fit")}),
    ({"proposal": "P-2026-007"}, {("bob", "<b>bold</b>"), ("dave", "gpu")}),
    ({"instrument": "in5"}, {("alice", "old-fit"), ("bob", "<b>bold</b>")}),
    ({"plan": "qemu-gpu"}, {("dave", "gpu")}),
    ({"state": "stopped", "user": "bob"}, {("bob", "<b>bold</b>")}),
    ({"min_age_days": "29", "user": "alice"}, {("alice", "old-fit")}),
    ({"max_age_days": "1.5"}, {("bob", "<b>bold</b>"), ("carol", "c00"), ("carol", "c01")}),
    ({"idle_days": "9", "proposal": "P-2026-011"}, {("alice", "old-fit")}),
    ({"idle_days": "9", "user": "bob"}, {("bob", "<b>bold</b>")}),  # never used counts as unused
    ({"user": "nobody"}, set()),
])
async def test_filters_return_the_right_rows(console: Console, people, query: dict, expected: set) -> None:
    r = await console.get(people["root"], "admin/instances?" + urlencode(query))
    assert r.code == 200
    assert set(rows(r.body)) == expected


async def test_instances_are_paged_by_50_and_sorted(console: Console, people) -> None:
    first = await console.get(people["root"], "admin/instances?user=carol&sort=server&order=asc")
    second = await console.get(people["root"], "admin/instances?user=carol&sort=server&order=asc&page=2")
    assert [s for _, s in rows(first.body)] == [f"c{n:02d}" for n in range(50)]
    assert [s for _, s in rows(second.body)] == [f"c{n:02d}" for n in range(50, 60)]
    assert 'data-total="60"' in first.body.decode() and 'rel="next"' in first.body.decode()
    newest = await console.get(people["root"], "admin/instances?user=carol&sort=-created")
    assert rows(newest.body)[:2] == [("carol", "c00"), ("carol", "c01")]
    idle = await console.get(people["root"], "admin/instances?user=carol&sort=last_activity&order=asc")
    assert rows(idle.body)[0] == ("carol", "c59")


async def test_instance_names_are_escaped_and_actions_are_api_posts(console: Console, people) -> None:
    html = (await console.get(people["root"], "admin/instances?user=bob")).body.decode()
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert 'data-api="api/admin/instances/bob/%3Cb%3Ebold%3C/b%3E/delete"' in html


@pytest.mark.parametrize(("query", "message"), [
    ("state=exploded", "state must be one of running, pending, stopped."),
    ("min_age_days=soon", "min_age_days must be a number of days, not &#39;soon&#39;."),
    ("idle_days=-1", "idle_days must be between 0 and 3650 days."),
    ("idle_days=nan", "idle_days must be between 0 and 3650 days."),
    ("sort=password", "sort must be one of"),
    ("page=0", "page must be a whole number from 1."),
    ("min_age_days=5&max_age_days=2", "min_age_days is larger than max_age_days"),
])
async def test_bad_filters_are_a_clear_400(console: Console, people, query: str, message: str) -> None:
    r = await console.get(people["root"], "admin/instances?" + query)
    assert r.code == 400
    assert message in r.body.decode()


async def test_html_in_a_notification_shows_as_text(console: Console, people) -> None:
    text = '<script>alert("x")</script><b>maintenance</b>'
    await console.store.add_notification("warn", text, NOW, NOW + timedelta(days=1), "root")
    html = (await console.get(people["ada"], "admin/notifications")).body.decode()
    assert "<script>alert" not in html and "<b>maintenance" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;b&gt;maintenance&lt;/b&gt;" in html
    assert 'data-api="api/admin/notifications"' in html  # created through the audited API


async def test_extension_requests_listed_with_their_comment_escaped(console: Console, people) -> None:
    ext = await console.store.add_extension("alice", "reduce", "alice", 7, "<i>beam time</i> moved")
    html = (await console.get(people["root"], "admin/extensions")).body.decode()
    assert f'<tr data-id="{ext["id"]}" data-status="pending">' in html
    assert "&lt;i&gt;beam time&lt;/i&gt; moved" in html and f'data-api="api/admin/extensions/{ext["id"]}"' in html
    r = await console.get(people["root"], "admin/extensions?status=<x>")
    assert r.code == 400


async def test_plans_show_gpu_plans_greyed_when_no_gpu_is_free(console: Console, people) -> None:
    html = (await console.get(people["root"], "admin/plans")).body.decode()
    gpu = re.search(r'<tr data-plan="qemu-gpu" class="([^"]*)">(.*?)</tr>', html, re.S)
    assert gpu and gpu.group(1) == "visa-greyed" and "no GPU free" in gpu.group(2)
    std = re.search(r'<tr data-plan="qemu-std" class="([^"]*)">', html)
    assert std and std.group(1) == ""


async def test_plans_come_from_the_service_config_when_the_hub_does_not_answer(
        console: Console, people, fake_hub: FakeHubAPI) -> None:
    saved, fake_hub.capacity = fake_hub.capacity, (503, {"message": "busy"})
    try:
        html = (await console.get(people["root"], "admin/plans")).body.decode()
    finally:
        fake_hub.capacity = saved
    assert "Capacity unknown (the hub answered 503)" in html
    gpu = re.search(r'<tr data-plan="qemu-gpu" class="([^"]*)">(.*?)</tr>', html, re.S)
    assert gpu and gpu.group(1) == "" and "GPU capacity unknown" in gpu.group(2)


async def test_plan_switch_needs_the_xsrf_token(console: Console, people) -> None:
    """Signed in by cookie, as a browser is: a POST without the XSRF token is refused (JupyterHub's
    rules through HubOAuth), the same POST with the page's token switches the plan off and back on."""
    cookie = console.cookie(people["ada"])
    page = await AsyncHTTPClient().fetch(console.url + "admin/plans", headers={"Cookie": cookie},
                                         follow_redirects=False, raise_error=False)
    assert page.code == 200
    token = unescape(re.search(r'name="_xsrf" value="([^"]+)"', page.body.decode()).group(1))
    xsrf_cookie = next(c.split(";")[0] for c in page.headers.get_list("Set-Cookie") if c.startswith("_xsrf="))
    form = {"plan": "qemu-std", "enabled": "no"}
    refused = await AsyncHTTPClient().fetch(
        console.url + "admin/plans", method="POST", body=urlencode(form), raise_error=False,
        follow_redirects=False, headers={"Cookie": f"{cookie}; {xsrf_cookie}", "Sec-Fetch-Mode": "navigate"})
    assert refused.code == 403 and read_disabled(console.switch_file) == set()
    for enabled, disabled in (("no", {"qemu-std"}), ("yes", set())):
        done = await AsyncHTTPClient().fetch(
            console.url + "admin/plans", method="POST", raise_error=False, follow_redirects=False,
            body=urlencode({**form, "enabled": enabled, "_xsrf": token}),
            headers={"Cookie": f"{cookie}; {xsrf_cookie}", "Sec-Fetch-Mode": "navigate"})
        assert done.code == 303, done.body[:300]
        assert read_disabled(console.switch_file) == disabled
    audit = await console.store.audit_rows(action="plan")
    assert [(a["actor"], a["reason"]) for a in audit[:2]] == [("ada", "enable"), ("ada", "disable")]


@pytest.mark.parametrize(("form", "status"), [
    ({"plan": "no-such-plan", "enabled": "no"}, 400),
    ({"plan": "qemu-std", "enabled": "maybe"}, 400),
])
async def test_bad_plan_switches_are_400(console: Console, people, form: dict, status: int) -> None:
    r = await console.get(people["root"], "admin/plans", method="POST", body=urlencode(form))
    assert r.code == status and read_disabled(console.switch_file) == set()


async def test_outbox_shows_the_maildir_newest_first_as_text(console: Console, people) -> None:
    box = mailbox.Maildir(console.maildir, create=True)
    for n, subject in enumerate(["first", "<img src=x onerror=alert(1)> second"]):
        msg = EmailMessage()
        msg["Subject"], msg["To"], msg["From"] = subject, "alice@example.org", "visa@localhost"
        msg.set_content(f"body {n}")
        m = mailbox.MaildirMessage(msg)
        m.set_date(NOW.replace(tzinfo=UTC).timestamp() + n)
        box.add(m)
    html = (await console.get(people["root"], "admin/outbox")).body.decode()
    assert "<img src=x" not in html
    assert html.index("&lt;img src=x onerror=alert(1)&gt; second") < html.index("<strong>first</strong>")
    assert "body 0" in html and "alice@example.org" in html


async def test_sessions_page_lists_running_instances_for_the_collab_presence(console: Console, people) -> None:
    html = (await console.get(people["root"], "admin/sessions")).body.decode()
    assert '<tr class="visa-instance-row" data-owner="dave" data-server="gpu">' in html
    assert 'data-owner="bob"' not in html  # stopped
    assert 'const base = "/services/visa-collab/" + "api/instances/";' in html  # presence: collab's admin read


@pytest.mark.parametrize(("query", "expected"), [
    ("", {"alice": "3", "bob": "—", "carol": "—", "dave": "unlimited"}),
    ("?role=staff", {"alice": "3"}),
    ("?name=AR", {"carol": "—"}),
])
async def test_users_page_shows_roles_and_quotas(console: Console, people, query: str, expected: dict) -> None:
    html = (await console.get(people["root"], "admin/users" + query)).body.decode()
    found = dict(re.findall(r'<tr data-user="([^"]*)">.*?<td class="visa-quota">([^<]*)</td>', html, re.S))
    assert found == expected
    if "alice" in expected:
        assert re.search(r'<tr data-user="alice">\s*<td>.*?</td>\s*<td><span class="badge bg-secondary me-1">STAFF</span>',
                         html, re.S)
