"""The security group per instrument against the real lab cloud (issue 18, part 3): created with
its own rules only, on the server at create while the window is open, attached and detached on
the server's Neutron ports as the window opens and closes."""
from __future__ import annotations

import pytest

from tests.spawner.openstack import lab
from tests.spawner.openstack.support import Progress, make_backend, spec
from tests.spawner.openstack.test_backend import standin_cloud  # noqa: F401 - the fixture
from visa_spawner.backends.openstack.security import instrument_group_name, instrument_policy

pytestmark = [pytest.mark.openstack, pytest.mark.asyncio(loop_scope="session")]

GATEWAY_RULE = {"protocol": "tcp", "port_range_min": 5075, "port_range_max": 5075, "remote_ip_prefix": "10.20.0.5/32"}


def test_instrument_policy_is_egress_only_to_what_the_site_names():
    policy = instrument_policy("D11", [GATEWAY_RULE, {**GATEWAY_RULE, "direction": "ingress"}])
    assert policy["name"] == instrument_group_name("D11") == "visa-instrument-D11"
    assert [r["direction"] for r in policy["rules"]] == ["egress", "ingress"]
    assert instrument_group_name("D11 / <b>") == "visa-instrument-D11-b"


async def test_instrument_group_follows_the_window_on_the_servers_ports(standin_cloud, lab_admin):  # noqa: F811
    hub_id, _ = standin_cloud
    instrument = f"D11-{hub_id}"
    group_name = instrument_group_name(instrument)
    backend = make_backend(hub_id, instrument_security_groups={instrument: [GATEWAY_RULE]})
    demo = lab.connect("lab-demo")
    net = lab_admin.network.create_network(name=f"instr-{hub_id}", is_shared=True, provider_network_type="flat",
                                           provider_physical_network=f"instr-{hub_id}")
    lab_admin.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.77.0.0/24", name=f"instr-{hub_id}")
    state, port = None, None
    try:
        # window closed, or an instrument of another proposal: no group
        assert await backend.security.ensure_for(roles=["USER"], instruments=[instrument], flavor="visa.small") == []
        assert await backend.security.ensure_for(roles=["USER"], instruments=["IN5"], flavor="visa.small",
                                                 open_instruments=[instrument]) == []
        # window open at create: the group exists with exactly the configured rule and goes on the server
        state = await backend.create(spec(server="instr", instruments=(instrument,), instrument_control=(instrument,)),
                                     Progress())
        group = demo.network.find_security_group(group_name)
        rules = [(r.direction, r.protocol, r.port_range_min, r.remote_ip_prefix)
                 for r in demo.network.security_group_rules(security_group_id=group.id)]
        assert rules == [("egress", "tcp", 5075, "10.20.0.5/32")]  # Neutron's allow-all egress removed
        server = lab_admin.compute.get_server(state["server_id"])
        assert server.security_groups is None or group_name in {g["name"] for g in server.security_groups}

        # the window closes and opens again: the group leaves and rejoins the server's port
        port = demo.network.create_port(network_id=net.id, device_id=state["server_id"])
        default_groups = set(demo.network.get_port(port.id).security_group_ids)
        assert group.id not in default_groups
        assert await backend.security.set_instrument_access(state["server_id"], instrument, True)
        assert set(demo.network.get_port(port.id).security_group_ids) == default_groups | {group.id}
        assert await backend.security.set_instrument_access(state["server_id"], instrument, True)  # idempotent
        assert sorted(demo.network.get_port(port.id).security_group_ids) == sorted(default_groups | {group.id})
        assert await backend.security.set_instrument_access(state["server_id"], instrument, False)
        assert set(demo.network.get_port(port.id).security_group_ids) == default_groups
        assert not await backend.security.set_instrument_access(state["server_id"], "not-configured", True)
    finally:
        if port is not None:
            demo.network.delete_port(port)
        if state is not None:
            await backend.stop(state)
        lab_admin.network.delete_network(net)
        group = demo.network.find_security_group(group_name, ignore_missing=True)
        if group:
            demo.network.delete_security_group(group)
