"""The instrument gateway end to end: the real IOC process (its PVA face), p4p's gateway in
`InstrumentGateway` with a fake hub, and real p4p clients whose connections come from per-instance
source addresses (127.77.x.y) over TCP only. Decisions come from the catalogue and the hub's
state, never from the user name a client claims."""
from __future__ import annotations

import pytest
from p4p.client.thread import Context, Disconnected, RemoteError
from p4p.client.thread import TimeoutError as PVATimeout

from tests.instruments.conftest import CATALOGUE
from tests.instruments.gateway_support import AFTER_WINDOW, Clients, FakeHub, GatewayThread, Today, start_ioc
from tests.support import free_port, wait_for
from visa_instruments.gateway import InstrumentGateway

pytestmark = pytest.mark.root  # starts the IOC process; binds 127.77.x.y source addresses

ALICE, BOB, CAROL, STRANGER = "127.77.0.11", "127.77.0.12", "127.77.0.13", "127.77.0.99"


@pytest.fixture(scope="module")
def ioc(tmp_path_factory):
    process, pva_port = start_ioc(tmp_path_factory.mktemp("ioc"))
    yield pva_port
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def fake_hub() -> FakeHub:
    hub = FakeHub()
    hub.add(ALICE, "alice", "P-2026-011")  # alice: INSTRUMENT_CONTROL, team of E-2026-0110 on D11
    hub.add(BOB, "bob", "P-2026-011")  # bob: same team, no INSTRUMENT_CONTROL → read only
    hub.add(CAROL, "carol", "P-2026-042")  # carol: her proposal is on IN5 only → nothing on D11
    return hub


@pytest.fixture
def today() -> Today:
    return Today()


@pytest.fixture
def gateway(ioc, fake_hub, today, tmp_path):
    port = free_port()
    gateway = InstrumentGateway(
        source=fake_hub, now=today, upstreams={"D11": f"127.0.0.1:{ioc}"}, catalogue=str(CATALOGUE),
        port=port, reevaluate_interval=0.5, audit_db_url=f"sqlite:///{tmp_path / 'audit.sqlite'}")
    with GatewayThread(gateway) as running:
        yield running


@pytest.fixture
def clients(gateway):
    clients = Clients(gateway.port)
    yield clients
    clients.close()


def test_a_write_is_allowed_inside_the_window_and_refused_outside(gateway, clients, today):
    alice = clients.from_address(ALICE)
    alice.put("D11:SAMPLE:X.VAL", 1.5, timeout=10)
    wait_for(lambda: alice.get("D11:SAMPLE:X.RBV", timeout=5) == 1.5, timeout=30, what="SAMPLE:X to reach 1.5")
    today.day = AFTER_WINDOW
    evaluations = gateway.evaluations
    wait_for(lambda: gateway.evaluations > evaluations, timeout=10, what="a re-evaluation")
    with pytest.raises(RemoteError, match="Put permission denied by gateway"):
        alice.put("D11:SAMPLE:X.VAL", 2.5, timeout=10)
    assert alice.get("D11:SAMPLE:X.VAL", timeout=5) == 1.5  # she still reads: P-2026-011 was on D11


def test_a_forged_user_name_changes_nothing(gateway, clients, fake_hub):
    fake_hub.groups = {"instrument:D11": frozenset({"dave"})}  # dave, D11's scientist, may write
    bob_as_dave = clients.from_address(BOB, claim="dave")
    assert bob_as_dave.get("D11:DET:Z.RBV", timeout=10) > 0
    with pytest.raises(RemoteError, match="Put permission denied by gateway"):
        bob_as_dave.put("D11:DET:Z.VAL", 9.0, timeout=10)
    stranger_as_dave = clients.from_address(STRANGER, claim="dave")
    with pytest.raises(PVATimeout):
        stranger_as_dave.get("D11:DET:Z.RBV", timeout=3)


def test_an_instance_without_the_instrument_and_an_unknown_peer_get_nothing(gateway, clients):
    for address in (CAROL, STRANGER, "127.0.0.1"):
        with pytest.raises(PVATimeout):
            clients.from_address(address).get("D11:SHUTTER", timeout=3)


def test_a_route_must_keep_the_gateways_port_number(gateway, clients):
    """pvxs answers a TCP search with the server's own port, and the client connects to the name
    server's address at that port: a route listening on another port loses the channel (the
    search arrives from 127.77.x.y, the channel from 127.0.0.1 straight to the gateway: refused).
    The instances' routes (sandbox bridge, qemu guestfwd) must listen on the gateway's port."""
    alice_elsewhere = clients.from_address(ALICE, port=free_port())
    with pytest.raises(PVATimeout):
        alice_elsewhere.get("D11:DET:Z.RBV", timeout=3)
    assert clients.from_address(ALICE).get("D11:DET:Z.RBV", timeout=10) > 0  # same port: served


def test_a_scientist_member_gives_write_and_a_user_member_with_the_right_too(gateway, clients, fake_hub):
    fake_hub.groups = {"instrument:D11": frozenset({"dave"})}
    fake_hub.change(CAROL, other_members=("dave",))  # a GUEST/SUPPORT scientist: read only
    carol = clients.from_address(CAROL)
    wait_for(lambda: carol.get("D11:SHUTTER", timeout=2) is not None, timeout=20, what="carol's read")
    with pytest.raises(RemoteError, match="denied"):
        carol.put("D11:TEMP:SP", 290.0, timeout=10)
    fake_hub.change(BOB, user_members=("alice",))  # alice, USER member of bob's instance, may pilot
    bob = clients.from_address(BOB)
    wait_for(lambda: _put_ok(bob, "D11:TEMP:SP", 295.0), timeout=20, what="bob's instance to gain write")


def test_a_right_removed_mid_session_stops_writes_on_the_open_channel(gateway, clients, fake_hub):
    fake_hub.change(BOB, user_members=("alice",))
    bob = clients.from_address(BOB)
    wait_for(lambda: _put_ok(bob, "D11:SAMPLE:Y.VAL", 1.0), timeout=20, what="bob's first write")
    fake_hub.change(BOB, user_members=())  # alice leaves bob's instance; bob keeps his connection
    wait_for(lambda: not _put_ok(bob, "D11:SAMPLE:Y.VAL", 2.0), timeout=10,
             what="writes to stop within the re-evaluation period")
    assert gateway.access.open_channels() > 0


def test_every_write_is_audited_allowed_or_refused(gateway, clients):
    alice, bob = clients.from_address(ALICE), clients.from_address(BOB, claim="dave")
    before = alice.get("D11:TEMP:SP", timeout=10)
    alice.put("D11:TEMP:SP", 280.0, timeout=10)
    with pytest.raises(RemoteError):
        bob.put("D11:TEMP:SP", 100.0, timeout=10)
    rows = wait_for(lambda: len(gateway.audit_log.rows("D11")) >= 2 and gateway.audit_log.rows("D11"),
                    timeout=10, what="two audit rows")
    refused, allowed = rows[0], rows[1]
    assert (allowed["owner"], allowed["server"], allowed["pv"], allowed["allowed"]) == ("alice", "lab", "D11:TEMP:SP", True)
    assert float(allowed["old_value"]) == before and float(allowed["new_value"]) == 280.0
    assert allowed["peer"].startswith(ALICE + ":")
    assert (refused["owner"], refused["allowed"], refused["new_value"]) == ("bob", False, "100")
    assert refused["claimed_account"] == "dave"  # recorded as claimed, decided on nothing
    assert alice.get("D11:TEMP:SP", timeout=5) == 280.0
    alice.put("D11:SHUTTER", "Open", timeout=10)  # an enum: p4p's audit line carries no value
    shutter = wait_for(lambda: [r for r in gateway.audit_log.rows("D11") if r["pv"] == "D11:SHUTTER"],
                       timeout=10, what="the shutter's audit row")[0]
    assert (shutter["old_value"], shutter["new_value"], shutter["allowed"]) == ("Closed", "Open", True)


def _put_ok(context: Context, pv: str, value) -> bool:
    try:
        context.put(pv, value, timeout=5)
        return True
    except (RemoteError, Disconnected):
        return False


def test_an_instance_started_after_the_last_pass_is_served_without_waiting_for_the_next(ioc, fake_hub, tmp_path):
    """A 30 s interval, and an instance that appears in the hub just after a pass: its first search
    (an unknown peer) runs a pass at once and waits for it, so it reads at once, not after 30 s
    (nor after the seconds a refused pvxs client waits before searching again)."""
    gateway = InstrumentGateway(
        source=fake_hub, now=Today(), upstreams={"D11": f"127.0.0.1:{ioc}"}, catalogue=str(CATALOGUE),
        port=free_port(), reevaluate_interval=30, audit_db_url=f"sqlite:///{tmp_path / 'audit.sqlite'}")
    with GatewayThread(gateway) as running:
        clients = Clients(running.port)
        try:
            newcomer = "127.77.0.21"
            fake_hub.add(newcomer, "alice", "P-2026-011")  # started after the gateway's first pass
            evaluations = running.evaluations
            context = clients.from_address(newcomer)
            assert context.get("D11:DET:Z.RBV", timeout=3) > 0
            assert running.evaluations == evaluations + 1  # one early pass, not the 30 s one
        finally:
            clients.close()
