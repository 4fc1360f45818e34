"""The gateway service's audit API over HTTP, with hub OAuth against the stand-in hub API of the
visa-ops console tests: admins and the instrument's scientists read its writes; others get 403,
bad input a JSON 400."""
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


@pytest_asyncio.fixture(loop_scope="session")
async def api(tmp_path, hub_oauth):  # noqa: F811
    gateway = AuditedGateway(tmp_path)
    gateway.audit_log.record(WriteRecord(
        at=datetime(2026, 11, 24, 10), peer="127.77.0.12:4", owner="bob", server="<b>lab</b>", instrument="D11",
        pv="D11:TEMP:SP", old_value="295", new_value="100", allowed=False, claimed_account="dave"))
    port = free_port()
    server = HTTPServer(make_app(gateway, PREFIX, "/hub/", secrets.token_bytes(32)))
    server.listen(port, "127.0.0.1")
    yield f"http://127.0.0.1:{port}{PREFIX}api/audit"
    server.stop()


async def fetch(url: str, token: str):
    response = await AsyncHTTPClient().fetch(url, headers={"Authorization": f"token {token}"}, raise_error=False)
    return response.code, json.loads(response.body or b"null")


async def test_scientists_and_admins_read_the_audit_of_their_instrument(api, fake_hub):  # noqa: F811
    dave, admin = fake_hub.person("dave"), fake_hub.person("erin", scopes=(ADMIN_SCOPE,))
    code, body = await fetch(f"{api}?instrument=D11", dave)
    assert code == 200 and body["instrument"] == "D11"
    [write] = body["writes"]
    assert (write["owner"], write["server"], write["pv"], write["allowed"]) == ("bob", "<b>lab</b>", "D11:TEMP:SP", False)
    assert (write["old_value"], write["new_value"], write["at"]) == ("295", "100", "2026-11-24T10:00:00.000")
    code, body = await fetch(f"{api}?instrument=D11&limit=1", admin)
    assert code == 200 and len(body["writes"]) == 1
    code, body = await fetch(f"{api}?instrument=IN5", dave)  # dave is not IN5's scientist
    assert code == 403 and "administrators and its scientists" in body["message"]


async def test_others_are_refused_and_bad_input_is_a_400(api, fake_hub):  # noqa: F811
    alice, dave = fake_hub.person("alice"), fake_hub.person("dave")
    code, body = await fetch(f"{api}?instrument=D11", alice)
    assert code == 403
    code, body = await fetch(f"{api}?instrument=%3Cscript%3E", dave)
    assert code == 400 and body["message"].startswith("Unknown instrument '<script>': the gateway serves D11, IN5")
    for limit in ("x", "0", "100000"):
        code, body = await fetch(f"{api}?instrument=D11&limit={limit}", dave)
        assert code == 400 and "limit" in body["message"]
