"""The gateway service's audit over HTTP (JSON and page), with hub OAuth against the stand-in hub API
of the visa-ops console tests: admins and the instrument's scientists read its writes, an instance's
owner only their own instances' writes; others get 403, bad input a 400 (JSON under api/, a page
elsewhere); what people typed is escaped on the page."""
from __future__ import annotations

import json
import secrets
from datetime import datetime

import pytest
import pytest_asyncio
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer

from tests.ops.test_console import fake_hub, hub_oauth  # noqa: F401 (fixtures: the hub's API, HubOAuth)
from tests.support import free_port
from visa_collab.roles import ADMIN_SCOPE
from visa_instruments.access import HubSnapshot
from visa_instruments.audit import AuditLog, WriteRecord
from visa_instruments.gateway_api import make_app

pytestmark = pytest.mark.asyncio(loop_scope="session")  # the app's server runs on the tests' loop
PREFIX = "/services/visa-instruments/"


class AuditedGateway:
    """The three things the API reads of the gateway, with a real audit table."""

    def __init__(self, tmp_path) -> None:
        self.upstreams = {"D11": "127.0.0.1:5075", "IN5": "127.0.0.1:5077"}
        self.audit_log = AuditLog.from_url(f"sqlite:///{tmp_path / 'audit.sqlite'}")
        self.snapshot = HubSnapshot(groups={"instrument:D11": frozenset({"dave"})})

    def scientists(self, instrument: str) -> frozenset[str]:
        return self.snapshot.scientists(instrument)


def write(minute: int, owner: str, server: str, pv: str, old: str, new: str, allowed: bool) -> WriteRecord:
    return WriteRecord(at=datetime(2026, 11, 24, 10, minute), peer=f"127.77.0.{minute}:4", owner=owner, server=server,
                       instrument=pv.split(":", 1)[0], pv=pv, old_value=old, new_value=new, allowed=allowed,
                       claimed_account="dave")


@pytest_asyncio.fixture(loop_scope="session")
async def api(tmp_path, hub_oauth):  # noqa: F811
    gateway = AuditedGateway(tmp_path)
    for record in (write(0, "bob", "<b>lab</b>", "D11:TEMP:SP", "295", "100", False),
                   write(1, "alice", "lab", "D11:DET:Z.VAL", "5", "8", True),
                   write(2, "alice", "other", "D11:SHUTTER", "Closed", "Open", True),
                   write(3, "alice", "lab", "IN5:SAMPLE:ROT.VAL", "0", "<script>x</script>", True)):
        gateway.audit_log.record(record)
    port = free_port()
    server = HTTPServer(make_app(gateway, PREFIX, "/hub/", secrets.token_bytes(32)))
    server.listen(port, "127.0.0.1")
    yield f"http://127.0.0.1:{port}{PREFIX}"
    server.stop()


async def fetch(url: str, token: str):
    response = await AsyncHTTPClient().fetch(url, headers={"Authorization": f"token {token}"}, raise_error=False)
    return response.code, json.loads(response.body or b"null")


async def page(url: str, token: str) -> tuple[int, str]:
    response = await AsyncHTTPClient().fetch(url, headers={"Authorization": f"token {token}"}, raise_error=False)
    assert response.headers["Content-Type"].startswith("text/html")
    return response.code, response.body.decode()


async def test_scientists_and_admins_read_the_audit_of_their_instrument(api, fake_hub):  # noqa: F811
    dave, admin = fake_hub.person("dave"), fake_hub.person("erin", scopes=(ADMIN_SCOPE,))
    code, body = await fetch(f"{api}api/audit?instrument=D11", dave)
    assert code == 200 and body["instrument"] == "D11" and (body["owner"], body["server"]) == ("", "")
    assert [w["pv"] for w in body["writes"]] == ["D11:SHUTTER", "D11:DET:Z.VAL", "D11:TEMP:SP"]  # newest first
    write = body["writes"][-1]
    assert (write["owner"], write["server"], write["pv"], write["allowed"]) == ("bob", "<b>lab</b>", "D11:TEMP:SP", False)
    assert (write["old_value"], write["new_value"], write["at"]) == ("295", "100", "2026-11-24T10:00:00.000")
    code, body = await fetch(f"{api}api/audit?instrument=D11&limit=1", admin)
    assert code == 200 and len(body["writes"]) == 1
    code, body = await fetch(f"{api}api/audit?instrument=IN5", dave)  # dave is not IN5's scientist
    assert code == 403 and "administrators and its scientists" in body["message"]
    code, body = await fetch(f"{api}api/audit?instrument=IN5", admin)
    assert code == 200 and [w["pv"] for w in body["writes"]] == ["IN5:SAMPLE:ROT.VAL"]


async def test_owner_and_server_filters_narrow_to_one_instance(api, fake_hub):  # noqa: F811
    dave = fake_hub.person("dave")
    code, body = await fetch(f"{api}api/audit?instrument=D11&owner=alice&server=lab", dave)
    assert code == 200 and (body["owner"], body["server"]) == ("alice", "lab")
    assert [(w["owner"], w["server"], w["pv"]) for w in body["writes"]] == [("alice", "lab", "D11:DET:Z.VAL")]
    code, body = await fetch(f"{api}api/audit?instrument=D11&owner=alice", dave)
    assert [w["server"] for w in body["writes"]] == ["other", "lab"]
    code, body = await fetch(f"{api}api/audit?instrument=D11&server=%3Cb%3Elab%3C%2Fb%3E", dave)
    assert [w["owner"] for w in body["writes"]] == ["bob"]


async def test_an_owner_reads_only_their_own_instances_writes(api, fake_hub):  # noqa: F811
    alice = fake_hub.person("alice")  # no scientist, no admin: owner of alice/lab and alice/other
    code, body = await fetch(f"{api}api/audit?instrument=D11&owner=alice&server=lab", alice)
    assert code == 200 and [w["pv"] for w in body["writes"]] == ["D11:DET:Z.VAL"]
    code, body = await fetch(f"{api}api/audit?instrument=D11&owner=alice", alice)
    assert code == 200 and {w["owner"] for w in body["writes"]} == {"alice"} and len(body["writes"]) == 2
    for others in ("", "&owner=bob", "&owner=bob&server=%3Cb%3Elab%3C%2Fb%3E", "&server=lab"):
        code, body = await fetch(f"{api}api/audit?instrument=D11{others}", alice)
        assert code == 403 and "owner=<their name>" in body["message"], others
    code, text = await page(f"{api}audit?instrument=D11&owner=bob", alice)
    assert code == 403 and "D11:TEMP:SP" not in text and "administrators and its scientists" in text


async def test_others_are_refused_and_bad_input_is_a_400(api, fake_hub):  # noqa: F811
    carol, dave = fake_hub.person("carol"), fake_hub.person("dave")
    code, body = await fetch(f"{api}api/audit?instrument=D11", carol)
    assert code == 403
    code, body = await fetch(f"{api}api/audit?instrument=%3Cscript%3E", dave)
    assert code == 400 and body["message"].startswith("Unknown instrument '<script>': the gateway serves D11, IN5")
    for limit in ("x", "0", "100000"):
        code, body = await fetch(f"{api}api/audit?instrument=D11&limit={limit}", dave)
        assert code == 400 and "limit" in body["message"]
    code, body = await fetch(f"{api}api/audit?instrument=D11&owner={'a' * 300}", dave)
    assert code == 400 and "at most 255" in body["message"]
    code, text = await page(f"{api}audit?instrument=%3Cscript%3Ealert(1)%3C/script%3E", dave)
    assert code == 400 and "Unknown instrument" in text and "<script>alert" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


async def test_the_page_lists_writes_newest_first_escaped(api, fake_hub):  # noqa: F811
    dave, admin = fake_hub.person("dave"), fake_hub.person("erin", admin=True)
    code, text = await page(f"{api}audit?instrument=D11", dave)
    assert code == 200 and "Instrument writes — D11" in text and "Every instance" in text
    rows = text.split('<tbody>', 1)[1].split("</tbody>", 1)[0].split("<tr")[1:]
    assert ["D11:SHUTTER" in rows[0], "D11:DET:Z.VAL" in rows[1], "D11:TEMP:SP" in rows[2]] == [True] * 3
    assert "Closed → Open" in rows[0] and "allowed" in rows[0] and "127.77.0.2:4" in rows[0]
    assert "bob/&lt;b&gt;lab&lt;/b&gt;" in rows[2] and "<b>lab</b>" not in text
    assert "<strong>REFUSED</strong>" in rows[2] and "table-danger" in rows[2] and "295 → 100" in rows[2]
    code, text = await page(f"{api}audit?instrument=IN5&owner=alice&server=lab", admin)
    assert code == 200 and "Instance alice/lab" in text
    assert "0 → &lt;script&gt;x&lt;/script&gt;" in text and "<script>x" not in text
    code, text = await page(f"{api}audit?instrument=D11&owner=nobody", dave)
    assert code == 200 and "No writes." in text


async def test_the_index_page_links_each_instrument_as_the_caller_may_read_it(api, fake_hub):  # noqa: F811
    code, text = await page(f"{api}audit", fake_hub.person("dave"))
    assert code == 200
    assert f'href="{PREFIX}audit?instrument=D11"' in text  # his instrument: every write
    assert f'href="{PREFIX}audit?instrument=IN5&amp;owner=dave"' in text  # another: his own instances'
