"""The visa-ops HTTP API: contract shapes, admin-only routes, bad input as clear 4xx JSON."""
from __future__ import annotations

import json

import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer

from tests.ops.conftest import T0
from tests.support import free_port
from visa_ops import base
from visa_ops.app import make_app

PREFIX = "/services/visa-ops/"


@pytest.fixture
def api(ops, fakehub, hubdb, monkeypatch):
    """(call, ops): call(method, path, user=None, body=None) → (status, JSON or text)."""

    def current_user(handler):  # stands in for hub OAuth: who the hub says is calling
        name = handler.request.headers.get("X-Test-User")
        model = fakehub.people.get(name) if name else None
        return dict(model, scopes=[]) if model else None

    monkeypatch.setattr(base.BaseHandler, "get_current_user", current_user)
    monkeypatch.setattr(base.BaseHandler, "check_xsrf_cookie", lambda handler: None)
    app = make_app(ops, PREFIX, "/hub/", b"x" * 32)
    port = free_port()
    servers: list[HTTPServer] = []

    async def call(method: str, path: str, user: str | None = None, body=None, raw: bool = False):
        if not servers:  # listen on the test's own event loop
            servers.append(HTTPServer(app))
            servers[0].listen(port, "127.0.0.1")
        client = AsyncHTTPClient()
        headers = {"X-Test-User": user} if user else {}
        data = None if body is None else (body if isinstance(body, (str, bytes)) else json.dumps(body))
        r = await client.fetch(f"http://127.0.0.1:{port}{PREFIX}{path}", method=method, headers=headers,
                               body=data, raise_error=False, follow_redirects=False,
                               allow_nonstandard_methods=True)
        if raw:
            return r
        text = r.body.decode()
        try:
            return r.code, json.loads(text)
        except ValueError:
            return r.code, text

    hubdb.server("alice", "s1", started=T0, last_activity=T0, plan="small")
    hubdb.server("alice", "q1", started=T0, last_activity=T0, plan="quick")
    hubdb.server("sam", "s2", roles=("staff",), started=T0, last_activity=T0)
    yield call
    for server in servers:
        server.stop()


async def test_me_and_instance_shapes(api, clock):
    clock.advance(days=12, hours=1)  # inside the 48 h lifetime window of a USER's 14 days
    status, me = await api("GET", "api/me", "alice")
    assert status == 200 and me["notifications"] == []
    by = {i["server"]: i for i in me["instances"]}
    assert set(by) == {"s1", "q1"}
    s1 = by["s1"]
    assert s1["expires_at"] == "2026-03-16T09:00:00+00:00" and s1["unlimited"] is False
    assert s1["inactivity_deadline"] == "2026-03-06T09:00:00+00:00" and s1["last_use"] == "2026-03-02T09:00:00+00:00"
    assert s1["warning"]["kind"] in ("lifetime", "inactivity") and s1["extension"] is None
    status, one = await api("GET", "api/instances/alice/s1", "alice")
    assert status == 200 and one["server"] == "s1"
    assert (await api("GET", "api/instances/alice/s1", "sam"))[0] == 403
    assert (await api("GET", "api/instances/alice/s1", "root"))[0] == 200
    assert (await api("GET", "api/instances/alice/nope", "alice"))[0] == 404


@pytest.mark.parametrize("body, message", [
    ({"days": 3}, "Say why"), ({"days": 3, "comment": ""}, "Say why"), ({"days": 0, "comment": "x"}, "at least 1"),
    ({"days": -2, "comment": "x"}, "at least 1"), ({"days": 10**12, "comment": "x"}, "at most"),
    ({"days": "3", "comment": "x"}, "whole number"), ({"days": 1.5, "comment": "x"}, "whole number"),
    ({"comment": "x"}, "whole number"), ("not json", "not valid JSON"), ("[1]", "JSON object"),
])
async def test_bad_extension_requests_are_400(api, body, message):
    status, answer = await api("POST", "api/instances/alice/s1/extensions", "alice", body)
    assert status == 400 and message in answer["message"]


async def test_extension_foreign_unknown_and_auto_accept(api, ops, outbox):
    good = {"days": 3, "comment": "beam time moved"}
    assert (await api("POST", "api/instances/alice/s1/extensions", "sam", good))[0] == 403
    assert (await api("POST", "api/instances/alice/zz/extensions", "alice", good))[0] == 404
    assert (await api("POST", "api/instances/alice/s1/extensions", None, good))[0] in (302, 403)
    status, ext = await api("POST", "api/instances/alice/q1/extensions", "alice", good)  # plan auto-accepts 3
    assert status == 201 and ext["status"] == "auto-accepted"
    assert (await ops.store.record("alice", "q1"))["extra_days"] == 3
    assert "accepted" in outbox.wait_count(1)[0]["Subject"]
    status, ext = await api("POST", "api/instances/alice/s1/extensions", "alice", good)
    assert status == 201 and ext["status"] == "pending"
    assert (await api("POST", "api/instances/alice/s1/extensions", "alice", good))[0] == 409
    # the admin decides; non-admins cannot
    assert (await api("POST", f"api/admin/extensions/{ext['id']}", "alice", {"decision": "accept"}))[0] == 403
    bad = await api("POST", f"api/admin/extensions/{ext['id']}", "root", {"decision": "maybe"})
    assert bad[0] == 400
    assert (await api("POST", "api/admin/extensions/99999999999999999999", "root", {"decision": "accept"}))[0] == 404
    status, done = await api("POST", f"api/admin/extensions/{ext['id']}", "root",
                             {"decision": "refuse", "comment": "no <b>more</b>"})
    assert status == 200 and done["status"] == "refused"
    assert (await api("POST", f"api/admin/extensions/{ext['id']}", "root", {"decision": "accept"}))[0] == 409
    status, me = await api("GET", "api/me", "alice")
    s1 = next(i for i in me["instances"] if i["server"] == "s1")
    assert s1["extension"]["status"] == "refused" and s1["extension"]["decision_comment"] == "no <b>more</b>"


ADMIN_ROUTES = [
    ("GET", "api/admin/instances", None), ("POST", "api/admin/instances/alice/s1/stop", {}),
    ("POST", "api/admin/instances/alice/s1/delete", {}), ("POST", "api/admin/instances/alice/s1/extend", {"days": 1}),
    ("POST", "api/admin/instances/alice/s1/unlimited", {}), ("GET", "api/admin/extensions", None),
    ("POST", "api/admin/extensions/1", {"decision": "accept"}), ("GET", "api/admin/notifications", None),
    ("POST", "api/admin/notifications", {"level": "info", "text": "x"}), ("DELETE", "api/admin/notifications/1", None),
    ("GET", "api/admin/audit", None), ("GET", "metrics", None),
]


@pytest.mark.parametrize("method, path, body", ADMIN_ROUTES)
async def test_admin_routes_refuse_non_admins(api, fakehub, method, path, body):
    status, answer = await api(method, path, "alice", body)
    assert status == 403
    assert ("remove", "alice", "s1") not in fakehub.calls and ("stop", "alice", "s1") not in fakehub.calls


async def test_admin_instances_actions_and_notifications(api, ops, fakehub, clock):
    status, page = await api("GET", "api/admin/instances?owner=alice&plan=small", "root")
    assert status == 200 and page["total"] == 1 and page["items"][0]["server"] == "s1"
    assert (await api("GET", "api/admin/instances?limit=abc", "root"))[0] == 400
    status, model = await api("POST", "api/admin/instances/alice/s1/unlimited", "root", {"comment": "PhD thesis"})
    assert status == 200 and model["unlimited"] is True and model["expires_at"] is None
    assert (await api("POST", "api/admin/instances/alice/s1/extend", "root", {"days": "x"}))[0] == 400
    assert (await api("POST", "api/admin/instances/alice/s1/explode", "root", {}))[0] == 404
    assert (await api("POST", "api/admin/instances/alice/s1/delete", "root", {"comment": "asked"}))[0] == 200
    assert ("remove", "alice", "s1") in fakehub.calls
    [row] = await ops.store.audit_rows("alice", "s1", "delete")
    assert (row["actor"], row["reason"], row["outcome"]) == ("root", "admin", "ok")

    for body in ({"level": "loud", "text": "x"}, {"level": "info", "text": ""}, {"level": "info", "text": "x",
                 "starts_at": "yesterday"}, {"level": "info", "text": "x", "starts_at": "2026-03-02T10:00:00Z",
                 "ends_at": "2026-03-02T09:00:00Z"}):
        assert (await api("POST", "api/admin/notifications", "root", body))[0] == 400
    status, n = await api("POST", "api/admin/notifications", "root",
                          {"level": "warn", "text": "<script>alert(1)</script> maintenance",
                           "ends_at": (clock().isoformat() + "Z").replace("09:00:00", "12:00:00")})
    assert status == 201 and n["level"] == "warn"
    status, banner = await api("GET", "banner?owner=alice&server=q1", "alice")
    assert status == 200 and "&lt;script&gt;alert(1)&lt;/script&gt; maintenance" in banner
    assert "<script>alert(1)" not in banner
    assert [x["id"] for x in (await api("GET", "api/me", "sam"))[1]["notifications"]] == [n["id"]]
    clock.advance(hours=3)  # past its end
    assert (await api("GET", "api/me", "sam"))[1]["notifications"] == []
    assert (await api("DELETE", f"api/admin/notifications/{n['id']}", "root"))[0] == 204
    assert (await api("DELETE", f"api/admin/notifications/{n['id']}", "root"))[0] == 404


async def test_banner_shows_the_warning_and_the_form_to_its_owner_only(api, clock):
    clock.advance(days=3, hours=1)  # 23 h before the inactivity deadline
    status, page = await api("GET", "banner?owner=alice&server=s1", "alice")
    assert status == 200 and "deleted for inactivity on 06 March 2026" in page and 'class="ask"' in page
    assert page.count('class="n warn warning"') == 1
    status, page = await api("GET", "banner?owner=alice", "alice")  # the home page: every instance
    assert page.count('class="n warn warning"') == 2 and page.count('class="ask"') == 2
    status, page = await api("GET", "banner?owner=alice&server=s1", "sam")
    assert status == 200 and "inactivity" not in page and 'class="ask"' not in page
    status, page = await api("GET", "banner?owner=alice&server=s1", "root")
    assert "inactivity" in page and 'class="ask"' not in page
    status, page = await api("GET", "banner?owner=alice&server=nope", "alice")
    assert status == 200 and "warning" not in page
    await api("POST", "api/instances/alice/s1/extensions", "alice", {"days": 7, "comment": "more data"})
    status, page = await api("GET", "banner?owner=alice&server=s1", "alice")
    assert "waiting for an administrator" in page and 'class="ask"' not in page


async def test_metrics_count_actions(api, ops):
    await api("POST", "api/admin/instances/alice/s1/stop", "root", {})
    status, text = await api("GET", "metrics", "root")
    assert status == 200
    assert 'visa_ops_lifecycle_actions_total{action="stop",outcome="ok",reason="admin"} 1.0' in text
    assert "visa_ops_sweep_duration_seconds_bucket" in text


async def test_root_sends_admins_to_the_console_and_others_home(api):
    r = await api("GET", "", "root", raw=True)
    assert r.code == 302 and r.headers["Location"] == f"{PREFIX}admin/"
    r = await api("GET", "", "alice", raw=True)
    assert r.code == 302 and r.headers["Location"] == "/hub/home"
