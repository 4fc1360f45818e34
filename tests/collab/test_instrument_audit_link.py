"""The collab audit of an instance links to the instrument gateway's write audit (issue 18, part 5):
one link per instrument the server started with (`user_options.instruments`), filtered on that
instance; none for an instance without instruments. Through the service's HTTP app, its hub OAuth
and the hub's REST API stood in by `HttpHub` (tests/collab/test_push.py)."""
from __future__ import annotations

import html
import re

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.collab.test_push import SERVICE, clock, fake, service  # noqa: F401 (fixtures)
from tests.ops.test_console import fake_hub, hub_oauth  # noqa: F401 (fixtures: the hub API, HubOAuth)

pytestmark = pytest.mark.asyncio(loop_scope="function")


async def members_page(port: int, person: str, server: str) -> tuple[int, str]:
    response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}{SERVICE}instances/alice/{server}",
                                             headers={"Authorization": f"token t-{person}"}, raise_error=False)
    return response.code, response.body.decode()


def instrument_links(page: str) -> list[tuple[str, str]]:
    return [(html.unescape(href), text) for href, text in
            re.findall(r'<p class="visa-instrument-audit"><a href="([^"]+)">([^<]+)</a>', page)]


async def test_the_instance_audit_links_its_instruments_writes(fake, service):  # noqa: F811
    fake.people["alice"]["servers"]["run"]["user_options"]["instruments"] = ["D11"]
    fake.people["alice"]["servers"]["fit"]["user_options"]["instruments"] = []
    fake.add_server("alice", "a&b", "P-1")
    fake.people["alice"]["servers"]["a&b"]["user_options"]["instruments"] = ["D11", "IN5"]
    code, page = await members_page(service.port, "alice", "run")
    assert code == 200 and 'id="visa-audit"' in page
    assert instrument_links(page) == [
        ("/services/visa-instruments/audit?instrument=D11&owner=alice&server=run", "Instrument writes — D11")]
    code, page = await members_page(service.port, "alice", "fit")  # no instrument: no link
    assert code == 200 and 'id="visa-audit"' in page and instrument_links(page) == []
    assert "Instrument writes" not in page
    code, page = await members_page(service.port, "alice", "a%26b")  # names are quoted in the link
    assert [href for href, _ in instrument_links(page)] == [
        f"/services/visa-instruments/audit?instrument={i}&owner=alice&server=a%26b" for i in ("D11", "IN5")]


async def test_only_those_who_read_the_instance_audit_see_the_link(fake, service):  # noqa: F811
    fake.people["alice"]["servers"]["run"]["user_options"]["instruments"] = ["D11"]
    fake.add_person("root", ["role:admin"], admin=True)
    code, page = await members_page(service.port, "root", "run")  # an admin: the page and the link
    assert code == 200 and [t for _, t in instrument_links(page)] == ["Instrument writes — D11"]
    code, page = await members_page(service.port, "dave", "run")  # not the owner: no page at all
    assert code == 403 and instrument_links(page) == []
    assert 'data-status="403"' in page and "Only the owner of this instance" in page  # the error page itself


@pytest.mark.asyncio(loop_scope="session")
async def test_the_admin_console_links_the_instrument_writes(tmp_path, fake_hub, hub_oauth):  # noqa: F811
    from tests.ops.test_console import Console
    console = Console(tmp_path, fake_hub)
    try:
        r = await console.get(fake_hub.person("root", admin=True), "admin/")
        assert r.code == 200
        nav = r.body.decode().split('id="visa-admin-nav"', 1)[1].split("</ul>", 1)[0]
        assert '<a class="nav-link" href="/services/visa-instruments/audit">Instrument writes</a>' in nav
        r = await console.get(fake_hub.person("bob"), "admin/")  # not an admin: no console links at all
        assert r.code == 403 and "Instrument writes" not in r.body.decode()
    finally:
        console.server.stop()
        sampler = console.app.settings.get("console_sampler")
        if sampler is not None:
            sampler.cancel()
