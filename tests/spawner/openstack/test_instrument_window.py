"""The reconciler follows the instrument-control windows on running servers (issue 18, part 3),
against the real lab cloud: a running server whose owner's window opens gets `visa-instrument-<id>`
on its Neutron port at the next reconcile pass, and loses it at the first pass after the window
closes. The hub's record listing is a stand-in of `GET /hub/api/users` (the reconciler's own REST
call); the catalogue is a real `FileCatalogue` file; the date is moved by hand."""
from __future__ import annotations

import json
from datetime import date

import pytest
from tornado import web
from tornado.httpserver import HTTPServer
from traitlets.config import Config

from tests.spawner.openstack import lab
from tests.spawner.openstack.support import PLAN, Progress, make_backend, spec
from tests.spawner.openstack.test_backend import standin_cloud  # noqa: F401 - the fixture
from tests.support import free_port
from visa_authenticator.base import VisaAuthenticator
from visa_spawner.backends.openstack.instrument_windows import InstrumentWindows
from visa_spawner.backends.openstack.reconciler import Reconciler
from visa_spawner.backends.openstack.security import instrument_group_name

pytestmark = [pytest.mark.openstack, pytest.mark.asyncio(loop_scope="session")]

GATEWAY_RULE = {"protocol": "tcp", "port_range_min": 5076, "port_range_max": 5076, "remote_ip_prefix": "10.20.0.5/32"}
CATALOGUE = """
persons:
  - {{id: alice, name: Alice, roles: [USER, INSTRUMENT_CONTROL]}}
  - {{id: bob, name: Bob, roles: [USER]}}
instruments:
  - {{id: {instrument}, name: test instrument, scientists: []}}
proposals:
  - {{id: P-1, title: test proposal}}
experiments:
  - {{id: E-1, proposal: P-1, instrument: {instrument}, start: 2026-11-21, end: 2026-11-26, team: [alice, bob]}}
"""


def hub_users(records: list[dict]) -> tuple[HTTPServer, str]:
    """The hub's `GET /users` as the reconciler reads it (one page)."""

    class Users(web.RequestHandler):
        def get(self) -> None:
            self.finish(json.dumps(records if self.get_argument("offset", "0") == "0" else []))

    server = HTTPServer(web.Application([(r"/hub/api/users", Users)]))
    port = free_port()
    server.listen(port, "127.0.0.1")
    return server, f"http://127.0.0.1:{port}/hub/api"


def record(owner: str, server: str, instrument: str, **options) -> dict:
    return {"name": owner, "servers": {server: {"name": server, "ready": True, "pending": None, "user_options": {
        "plan": PLAN.id, "proposal": "P-1", "instruments": [instrument], **options}}}}


async def test_the_reconciler_opens_and_closes_the_group_with_the_window(standin_cloud, lab_admin, tmp_path):  # noqa: F811
    hub_id, _ = standin_cloud
    instrument = f"D11-{hub_id}"
    (tmp_path / "catalogue.yaml").write_text(CATALOGUE.format(instrument=instrument))
    config = Config()
    config.FileCatalogue.path = str(tmp_path / "catalogue.yaml")
    authenticator = VisaAuthenticator(config=config, instrument_control_days=7, enable_auth_state=True)
    backend = make_backend(hub_id, instrument_security_groups={instrument: [GATEWAY_RULE]})
    today = [date(2026, 12, 10)]  # E-1 ended 2026-11-26: the window (7 days) closed on 2026-12-03
    windows = InstrumentWindows(backend.security, authenticator.may_pilot, lambda: today[0])
    demo = lab.connect("lab-demo")
    net = lab_admin.network.create_network(name=f"instr-{hub_id}", is_shared=True, provider_network_type="flat",
                                           provider_physical_network=f"instr-{hub_id}")
    lab_admin.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.78.0.0/24", name=f"instr-{hub_id}")
    hub, api_url = hub_users([record("alice", "run", instrument), record("bob", "fit", instrument)])
    reconciler = Reconciler(backend, {PLAN.id}, windows=windows, hub_api_url=api_url, api_token="t", grace=3600)
    states, ports = [], []
    try:
        for owner, server in (("alice", "run"), ("bob", "fit")):  # bob: in the team, no INSTRUMENT_CONTROL
            states.append(await backend.create(spec(owner=owner, server=server, proposal="P-1", plan=PLAN,
                                                    instruments=(instrument,)), Progress()))
            ports.append(demo.network.create_port(network_id=net.id, device_id=states[-1]["server_id"]))
        group = backend.security.instruments[instrument]["name"]
        assert group == instrument_group_name(instrument)

        def groups(port) -> set[str]:
            return set(demo.network.get_port(port.id).security_group_ids)

        defaults = [groups(p) for p in ports]
        counts = await reconciler.reconcile()  # closed: nothing to open
        assert counts["deleted"] == counts["stopped"] == 0
        group_id = demo.network.find_security_group(group).id
        assert [groups(p) for p in ports] == defaults and all(group_id not in d for d in defaults)

        today[0] = date(2026, 11, 24)  # the experiment runs: alice's window opens, bob has no right
        counts = await reconciler.reconcile()
        assert groups(ports[0]) == defaults[0] | {group_id}, "attached within one pass"
        assert groups(ports[1]) == defaults[1]
        assert counts["instrument_attached"] == 1

        counts = await reconciler.reconcile()  # nothing changed: Neutron is not asked again
        assert counts["instrument_attached"] == counts["instrument_detached"] == 0
        assert groups(ports[0]) == defaults[0] | {group_id}

        today[0] = date(2026, 12, 3)  # the window's last day
        assert (await reconciler.reconcile())["instrument_detached"] == 0 and group_id in groups(ports[0])
        today[0] = date(2026, 12, 4)  # closed
        counts = await reconciler.reconcile()
        assert groups(ports[0]) == defaults[0], "detached within one pass"
        assert counts["instrument_detached"] == 1
    finally:
        hub.stop()
        for port in ports:
            demo.network.delete_port(port)
        for state in states:
            await backend.stop(state)
        lab_admin.network.delete_network(net)
        found = demo.network.find_security_group(instrument_group_name(instrument), ignore_missing=True)
        if found:
            demo.network.delete_security_group(found)
