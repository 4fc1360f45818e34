"""The console's Users page: an admin overrides a person's instance quota (the hub's quota
overrides file, audited), bad values are a clear 400, non-admins get 403, guest expiry is shown
read-only. The console harness of test_console.py: the app on a port, a stand-in hub API."""
from __future__ import annotations

import re
from html import unescape
from urllib.parse import urlencode

import pytest
import pytest_asyncio
from tornado.httpclient import AsyncHTTPClient

from tests.ops.test_console import Console, console, fake_hub, hub_oauth, people  # noqa: F401
from visa_spawner.quota_overrides import read_overrides

aio = pytest.mark.asyncio(loop_scope="session")  # the console app serves on the tests' loop


@pytest_asyncio.fixture(loop_scope="session")
async def users_console(console: Console, fake_hub) -> Console:  # noqa: F811
    """The console with a quota overrides file (emptied for each test) and carol a guest."""
    path = console.tmp / "quota-overrides.json"
    path.unlink(missing_ok=True)
    console.app.settings["quota_overrides_file"] = str(path)
    console.overrides_file = path
    fake_hub.others["carol"] = {"kind": "user", "name": "carol", "auth_state": {"visa": {
        "quota": 0, "roles": ["GUEST"], "role_expires": {"GUEST": "2026-12-31"}}}}
    return console


async def post(c: Console, token: str, form: dict):
    return await c.get(token, "admin/users", method="POST", body=urlencode(form))


def cell(html: str, user: str, css: str) -> str:
    row = re.search(rf'<tr data-user="{user}">(.*?)</tr>', html, re.S)
    assert row, user
    found = re.search(rf'<td class="{css}"[^>]*>(.*?)</td>', row.group(1), re.S)
    return unescape(found.group(1)).strip() if found else ""


@aio
async def test_an_admin_sets_and_clears_an_override_audited(users_console: Console, people) -> None:  # noqa: F811
    c = users_console
    r = await post(c, people["ada"], {"user": "carol", "quota": "1"})
    assert r.code == 303 and r.headers["Location"].endswith("admin/users?name=carol")
    assert read_overrides(c.overrides_file) == {"carol": 1}
    await post(c, people["root"], {"user": "dave", "quota": " -1 "})
    assert read_overrides(c.overrides_file) == {"carol": 1, "dave": -1}
    html = (await c.get(people["root"], "admin/users")).body.decode()
    assert re.search(r'<tr data-user="carol">.*?data-override="1"', html, re.S)
    assert cell(html, "carol", "visa-quota") == "0 (awaiting approval)", "the catalogue's value beside it"
    assert re.search(r'<tr data-user="carol">.*?name="quota" type="number"[^>]*value="1"', html, re.S)
    assert re.search(r'<tr data-user="alice">.*?data-override=""', html, re.S)
    r = await post(c, people["ada"], {"user": "carol", "quota": ""})
    assert r.code == 303 and read_overrides(c.overrides_file) == {"dave": -1}
    audit = await c.store.audit_rows(action="quota")
    assert [(a["actor"], a["owner"], a["reason"]) for a in audit[:3]] == [
        ("ada", "carol", "clear"), ("root", "dave", "set"), ("ada", "carol", "set")]


@aio
async def test_guest_expiry_is_shown_read_only(users_console: Console, people) -> None:  # noqa: F811
    html = (await users_console.get(people["root"], "admin/users")).body.decode()
    assert cell(html, "carol", "visa-guest-until") == "2026-12-31"
    assert cell(html, "alice", "visa-guest-until") == ""
    assert "come from the facility catalogue" in html
    assert 'name="guest' not in html and 'name="role' not in html.split('id="visa-users"')[1]  # no form for them


@pytest.mark.parametrize(("form", "message"), [
    ({"user": "carol", "quota": "two"}, "quota must be a whole number from -1 to 1000."),
    ({"user": "carol", "quota": "1.5"}, "quota must be a whole number from -1 to 1000."),
    ({"user": "carol", "quota": "-2"}, "quota must be a whole number from -1 to 1000."),
    ({"user": "carol", "quota": "1001"}, "quota must be a whole number from -1 to 1000."),
    ({"user": "carol", "quota": "99999999999999999999"}, "quota must be a whole number from -1 to 1000."),
    ({"user": "nobody", "quota": "1"}, "No such user."),
    ({"user": "", "quota": "1"}, "No such user."),
    ({"user": "<b>x</b>", "quota": "1"}, "No such user."),
])
@aio
async def test_bad_overrides_are_a_clear_400_and_change_nothing(users_console: Console, people, form, message) -> None:  # noqa: F811
    audited = len(await users_console.store.audit_rows(action="quota"))
    r = await post(users_console, people["root"], form)
    assert r.code == 400 and message in r.body.decode()
    assert not users_console.overrides_file.exists()
    assert len(await users_console.store.audit_rows(action="quota")) == audited


@pytest.mark.parametrize("who", ["bob", "eve"])
@aio
async def test_a_non_admin_cannot_override(users_console: Console, people, who: str) -> None:  # noqa: F811
    r = await post(users_console, people[who], {"user": who, "quota": "1000"})
    assert r.code == 403 and not users_console.overrides_file.exists()


@aio
async def test_the_override_form_needs_the_xsrf_token(users_console: Console, people) -> None:  # noqa: F811
    """Signed in by cookie, as a browser is: without the page's XSRF token the POST is refused."""
    c = users_console
    cookie = c.cookie(people["grace"])
    page = await AsyncHTTPClient().fetch(c.url + "admin/users", headers={"Cookie": cookie}, raise_error=False)
    token = unescape(re.search(r'name="_xsrf" value="([^"]+)"', page.body.decode()).group(1))
    xsrf_cookie = next(v.split(";")[0] for v in page.headers.get_list("Set-Cookie") if v.startswith("_xsrf="))
    headers = {"Cookie": f"{cookie}; {xsrf_cookie}", "Sec-Fetch-Mode": "navigate"}
    form = {"user": "bob", "quota": "5"}
    refused = await AsyncHTTPClient().fetch(c.url + "admin/users", method="POST", body=urlencode(form),
                                            headers=headers, raise_error=False, follow_redirects=False)
    assert refused.code == 403 and not c.overrides_file.exists()
    done = await AsyncHTTPClient().fetch(c.url + "admin/users", method="POST", body=urlencode({**form, "_xsrf": token}),
                                         headers=headers, raise_error=False, follow_redirects=False)
    assert done.code == 303 and read_overrides(c.overrides_file) == {"bob": 5}


@aio
async def test_without_an_overrides_file_the_form_is_not_offered(users_console: Console, people) -> None:  # noqa: F811
    del users_console.app.settings["quota_overrides_file"]
    html = (await users_console.get(people["root"], "admin/users")).body.decode()
    assert 'name="quota"' not in html
    r = await post(users_console, people["root"], {"user": "bob", "quota": "1"})
    assert r.code == 409 and "VISA_OPS_QUOTA_OVERRIDES_FILE is not set" in r.body.decode()


@pytest.mark.root
def test_on_a_real_hub_an_admin_lets_grace_create_an_instance_without_a_restart(hub, login) -> None:
    """grace's catalogue quota is 0 (awaiting approval): refused; the admin sets 1 in the console
    (its form, through the hub's OAuth and XSRF): grace creates an instance, same hub process."""
    hub_pid = hub.proc.pid
    grace = login("grace")
    form = {"proposal": "P-2021-007", "plan": "sandbox-small", "screen": "1280x720", "keyboard": "us"}
    refused = grace.new_instance(name="Before", **form)
    assert refused.status_code == 400 and "waiting for approval" in refused.text
    assert 'id="visa-pending"' in grace.home().text
    admin = login("admin")
    page = admin.s.get(f"{hub.url}/services/visa-ops/admin/users?name=grace", timeout=30)
    assert page.status_code == 200 and '<tr data-user="grace">' in page.text, page.text[:500]
    xsrf = unescape(re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1))
    r = admin.s.post(f"{hub.url}/services/visa-ops/admin/users", data={"_xsrf": xsrf, "user": "grace", "quota": "1"},
                     allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text[:500]
    try:
        assert 'id="visa-pending"' not in grace.home().text, "the home page follows the override"
        r = grace.new_instance(name="After", **form)
        assert r.status_code == 302, r.text[:500]
        server = r.headers["location"].rsplit("/", 1)[1]
        hub.wait_ready("grace", server)
        assert hub.proc.pid == hub_pid and hub.proc.poll() is None, "no restart"
        hub.delete_server("grace", server)
    finally:
        admin.s.post(f"{hub.url}/services/visa-ops/admin/users", data={"_xsrf": xsrf, "user": "grace", "quota": ""},
                     allow_redirects=False, timeout=30)
