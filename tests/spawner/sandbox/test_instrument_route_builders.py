"""The pure half of the instrument route: addresses, the gateway's form, the bridge's route syntax."""
from __future__ import annotations

import argparse
import ipaddress
import re

import pytest

from visa_spawner.backends.base import Backend
from visa_spawner.backends.instrument_net import (
    INSTRUMENT_NETWORK,
    AddressBook,
    allocate_address,
    instrument_env,
    local_gateway,
    parse_gateway,
    preferred_address,
)
from visa_spawner.backends.sandbox.bridge import route
from visa_spawner.backends.sandbox.network import HubRoute, bridge_argv, gateway_route


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:5075", ("127.0.0.1", 5075)),
    ("gw.facility.example:15075", ("gw.facility.example", 15075)),
    ("[::1]:5075", ("::1", 5075)),
])
def test_parse_gateway(text, expected):
    assert parse_gateway(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", ":5075", "127.0.0.1:0", "127.0.0.1:70000", "host:port"])
def test_parse_gateway_refuses(text):
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_gateway(text)


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:5075", ("127.0.0.1", 5075)), ("localhost:5075", ("127.0.0.1", 5075)),
    ("127.0.0.2:6000", ("127.0.0.2", 6000)),
])
def test_local_gateway(text, expected):
    assert local_gateway(text) == expected


@pytest.mark.parametrize("text", ["10.0.0.5:5075", "gw.example:5075", "127.77.0.9:5075"])
def test_local_gateway_must_be_loopback_outside_the_instance_block(text):
    with pytest.raises(ValueError, match="loopback"):
        local_gateway(text)


def test_backend_trait_refuses_a_malformed_gateway_at_configuration():
    class Probe(Backend):
        pass

    assert Probe(instrument_gateway=" 127.0.0.1:5075 ").instrument_gateway == "127.0.0.1:5075"
    with pytest.raises(Exception, match="HOST:PORT"):
        Probe(instrument_gateway="127.0.0.1")


def test_addresses_are_stable_per_instance_inside_the_block_and_unique():
    a = preferred_address("visa-aaa")
    assert a == preferred_address("visa-aaa") and ipaddress.IPv4Address(a) in INSTRUMENT_NETWORK
    assert allocate_address("visa-aaa", []) == a
    taken_next = allocate_address("visa-aaa", [a])
    assert taken_next != a and ipaddress.IPv4Address(taken_next) in INSTRUMENT_NETWORK
    assert not taken_next.endswith((".0", ".255"))


def test_allocation_wraps_and_skips_network_looking_addresses():
    last = str(INSTRUMENT_NETWORK[-2])  # 127.77.255.254: the next ones wrap to 127.77.0.1
    key = next(k for k in (f"k{i}" for i in range(400000)) if preferred_address(k) == last)
    assert allocate_address(key, [last]) == "127.77.0.1"


def test_address_book_keeps_saved_addresses_and_releases_on_stop():
    book = AddressBook()
    first = book.claim("visa-a")
    assert book.claim("visa-a") == first  # a second claim (status after create) changes nothing
    restored = book.claim("visa-b", saved=first)  # a saved state naming a held address gets another one
    assert restored != first
    assert book.claim("visa-c", saved="127.77.3.4") == "127.77.3.4"
    assert book.holder("127.77.3.4") == "visa-c"
    assert book.claim("visa-d", also_taken=[preferred_address("visa-d")]) != preferred_address("visa-d")
    book.release("visa-c")
    assert book.holder("127.77.3.4") is None
    with pytest.raises(ValueError, match="outside"):
        book.claim("visa-e", saved="10.0.0.1")


def test_instrument_env_names_one_tcp_name_server_and_no_udp_search():
    assert instrument_env("10.0.2.101:5075") == {
        "EPICS_PVA_NAME_SERVERS": "10.0.2.101:5075", "EPICS_PVA_AUTO_ADDR_LIST": "NO", "EPICS_PVA_ADDR_LIST": "",
        "EPICS_CA_AUTO_ADDR_LIST": "NO", "EPICS_CA_ADDR_LIST": "", "VISA_INSTRUMENT_GATEWAY": "10.0.2.101:5075",
    }


def test_gateway_route_and_its_bridge_argument():
    r = gateway_route("localhost:15075", "127.77.1.2", [HubRoute(8081, "127.0.0.1", 8081)], jupyter_port=9000)
    assert r == HubRoute(15075, "127.0.0.1", 15075, "127.77.1.2")  # inside on the gateway's own port
    argv = bridge_argv(info_fd=3, block_fd=4, jupyter_port=9000, uid=7, gid=8, python="/py", script="/b.py",
                       routes=[HubRoute(8081, "127.0.0.1", 8081), r])
    assert argv[-2:] == ["--route=8081=127.0.0.1:8081", "--route=15075=127.0.0.1:15075@127.77.1.2"]
    assert route(argv[-1].removeprefix("--route=")) == (15075, "127.0.0.1", 15075, "127.77.1.2")
    assert route("8081=127.0.0.1:8081") == (8081, "127.0.0.1", 8081, "")


@pytest.mark.parametrize("routes, jupyter", [([HubRoute(15075, "127.0.0.1", 15075)], 9000), ([], 15075)])
def test_gateway_route_refuses_a_taken_inside_port(routes, jupyter):
    with pytest.raises(ValueError, match=re.escape("port 15075")):
        gateway_route("127.0.0.1:15075", "127.77.1.2", routes, jupyter_port=jupyter)


@pytest.mark.parametrize("text", ["5075=127.0.0.1:1@evil", "x=127.0.0.1:1", "5075=:1@127.77.0.1"])
def test_bridge_refuses_a_bad_route(text):
    with pytest.raises(argparse.ArgumentTypeError):
        route(text)
