"""Pure pieces of the OpenStack backend: user-data structure under hostile input (property-based),
names/tags/metadata, security-group selection, error translation."""
from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keystoneauth1 import exceptions as ksa_exc
from openstack import exceptions as sdk_exc

from tests.spawner.openstack.support import PLAN, make_backend, spec
from visa_spawner.backends.guest import cloudinit
from visa_spawner.backends.openstack.errors import fault_error, is_transient, to_backend_error
from visa_spawner.backends.openstack.model import (
    hub_tag,
    missing_rules,
    select_security_groups,
    server_address,
    server_metadata,
    server_name,
)

hostile = st.text(alphabet=st.characters(codec="utf-8"), max_size=200) | st.sampled_from([
    "'; rm -rf / #", "$(reboot)", "`id`", "\n- [sh, -c, reboot]\nruncmd:", "#cloud-config\n", "{proposal}",
    "a: b\n  c: [d", "\u2028\u0000\x1b[31m", "--ServerApp.token=x", "../../etc/shadow", "\"}\nwrite_files:",
])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(owner=hostile.filter(bool), server=hostile.filter(bool), title=hostile, keyboard=hostile, display=hostile)
def test_hostile_values_never_change_the_user_data_structure(owner, server, title, keyboard, display):
    backend = make_backend("prop")
    s = spec(owner=owner, server=server, proposal_title=title, keyboard=keyboard, display_name=display)
    text = base64.b64decode(backend.user_data(s)).decode()
    doc = cloudinit.parse_cloud_config(text)
    assert list(doc) == ["write_files", "runcmd"]
    assert [f["path"] for f in doc["write_files"]] == [cloudinit.CONFIG_PATH, cloudinit.SCRIPT_PATH, cloudinit.UNIT_PATH]
    assert doc["runcmd"] == [["systemctl", "daemon-reload"],
                             ["systemctl", "enable", "--now", "--no-block", "visa-instance.service"]]
    files = {f["path"]: f for f in doc["write_files"]}
    assert files[cloudinit.SCRIPT_PATH]["content"] == cloudinit.START_SCRIPT  # the script never varies
    config = json.loads(files[cloudinit.CONFIG_PATH]["content"])
    assert (config["owner"], config["server_name"], config["proposal_title"], config["keyboard"],
            config["display_name"]) == (owner, server, title, keyboard, display)
    assert config["command"] == ["jupyterhub-singleuser"] and files[cloudinit.CONFIG_PATH]["permissions"] == "0600"
    name = server_name("prop", owner, server)
    assert name.startswith("visa-prop-") and len(name) == len("visa-prop-") + 16
    meta = server_metadata(hub_id="h", owner=owner, server=server, proposal="", plan=PLAN.id)
    assert all(len(v) <= 255 and v.isprintable() for v in meta.values())


def test_names_are_deterministic_and_tags_safe():
    assert server_name("h", "alice", "a") == server_name("h", "alice", "a") != server_name("h", "alice", "b")
    assert server_name("h", "a", "b/c") != server_name("h", "a/b", "c")
    assert hub_tag("hub one/2,3") == "visa-hub-hub-one-2-3"


def test_security_groups_by_role_instrument_and_flavour():
    policies = [
        {"name": "visa-base", "rules": []},
        {"name": "visa-ssh-staff", "when": {"roles": ["STAFF"]}},
        {"name": "visa-d11-daq", "when": {"instruments": ["D11"], "flavors": ["visa.large"]}},
    ]
    pick = lambda **kw: [p["name"] for p in select_security_groups(policies, **kw)]  # noqa: E731
    assert pick(roles=["USER"], instruments=[], flavor="visa.small") == ["visa-base"]
    assert pick(roles=["STAFF"], instruments=["D11"], flavor="visa.small") == ["visa-base", "visa-ssh-staff"]
    assert pick(roles=[], instruments=["D11"], flavor="visa.large") == ["visa-base", "visa-d11-daq"]
    with pytest.raises(ValueError, match="unknown condition"):
        select_security_groups([{"name": "x", "when": {"colour": ["red"]}}], roles=[], instruments=[], flavor="f")
    wanted = [{"protocol": "tcp", "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "10.0.0.0/8"}]
    assert missing_rules(wanted, []) == [{"direction": "ingress", "ethertype": "IPv4", **wanted[0]}]
    assert missing_rules(wanted, [{"direction": "ingress", "ethertype": "IPv4", **wanted[0], "id": "x"}]) == []


def test_fixed_ip_is_the_default_address_source():
    addresses = {"lab": [{"addr": "10.0.0.5", "version": 4, "OS-EXT-IPS:type": "fixed"},
                         {"addr": "203.0.113.9", "version": 4, "OS-EXT-IPS:type": "floating"}]}
    assert server_address(addresses) == "10.0.0.5"
    assert server_address(addresses, kind="floating") == "203.0.113.9"
    assert server_address(addresses, network="other") == ""


def test_errors_become_readable_reasons():
    quota = sdk_exc.HttpException(message="Forbidden", details="Quota exceeded for instances: Requested 1, "
                                  "but already used 2 of 2 instances", http_status=403)
    e = to_backend_error(quota, "creating the server")
    assert e.reason == "quota" and "(2 of 2 in use)" in e.message
    assert is_transient(sdk_exc.HttpException(message="x", http_status=503))
    assert is_transient(ksa_exc.ConnectTimeout())
    assert is_transient(sdk_exc.SDKException("Endless pagination loop detected, aborting"))
    assert not is_transient(sdk_exc.SDKException("Invalid flavor"))
    discovery = sdk_exc.NotSupported("The image service for lab-demo:RegionOne exists but does not have any "
                                     "supported versions.")  # discovery that got a 502 from the root
    assert to_backend_error(discovery, "looking up the image").reason == "cloud-unavailable"
    assert not is_transient(sdk_exc.HttpException(message="x", http_status=400))
    assert to_backend_error(ksa_exc.ConnectFailure(), "listing").reason == "cloud-unavailable"
    fault = fault_error({"message": "No valid host was found. password=hunter2", "code": 500}, "ERROR")
    assert fault.reason == "capacity" and "hunter2" not in fault.message
