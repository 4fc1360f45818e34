"""The panel on the whole path: real IOC process → the gateway (p4p's, with a fake hub) → the
panel's PyDM, whose connections reach the gateway from an instance's address (127.77.x.y)
through a relay, as a sandbox's bridge makes them. Alice's instance may pilot D11 inside
E-2026-0110's window: a motor moves, a run started from the panel writes a NeXus file; once the
window is over, the gateway refuses her next write and the panel says so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from p4p.client.thread import Context

from tests.instance.jupyter import ARTIFACTS, REPO
from tests.instance.test_desktop_launcher import Launcher
from tests.instance.test_instrument_display import CHANNELS, INSTANCE_PYTHON, MOTORS, UnixSocketFrames, type_into
from tests.instruments.conftest import CATALOGUE
from tests.instruments.gateway_support import AFTER_WINDOW, FakeHub, GatewayThread, Relay, Today, start_ioc
from tests.rfb import RfbClient
from tests.support import free_port, wait_for
from visa_instruments.gateway import InstrumentGateway, tcp_client_conf

pytestmark = pytest.mark.root  # the IOC, Xvnc and PyDM processes; binds 127.77.x.y

ALICE = "127.77.0.21"
START_RUN = (60, 413)  # the panel's "Start run" button on its 1280x720 screen (real IOC: units shown)
DET_Z_VAL, SAMPLE_X_VAL = (288, 143), (288, 170)


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[tuple[str, Today, InstrumentGateway, Context]]:
    """(the panel's name server, the gateway's date, the gateway, a direct client of the IOC)."""
    process, pva_port = start_ioc(tmp_path)
    hub, today = FakeHub(), Today()
    hub.add(ALICE, "alice", "P-2026-011")  # INSTRUMENT_CONTROL on E-2026-0110 (D11)
    gateway = InstrumentGateway(
        source=hub, now=today, upstreams={"D11": f"127.0.0.1:{pva_port}"}, catalogue=str(CATALOGUE),
        port=free_port(), reevaluate_interval=0.5, audit_db_url=f"sqlite:///{tmp_path / 'audit.sqlite'}")
    relay = None
    try:
        with GatewayThread(gateway) as running, \
                Context("pva", conf=tcp_client_conf([f"127.0.0.1:{pva_port}"]), useenv=False) as direct:
            relay = Relay("127.78.0.21", ALICE, ("127.0.0.1", running.port))
            yield relay.address, today, running, direct
    finally:
        if relay is not None:
            relay.close()
        process.terminate()
        process.wait(timeout=10)


def test_panel_through_the_gateway(chain: tuple[str, Today, InstrumentGateway, Context], tmp_path: Path) -> None:
    name_server, today, gateway, direct = chain
    command = [INSTANCE_PYTHON, "-m", "visa_instance.instrument_launcher",
               "--instrument", "D11", "--motors", ",".join(MOTORS)]
    launcher = Launcher(tmp_path / "panel", command, PYTHONPATH=str(REPO), **tcp_client_conf([name_server]))
    try:
        launcher.wait_ready(40)
        wait_for(lambda: f"connected {CHANNELS}/{CHANNELS} channels" in launcher.log(), 40,
                 f"PyDM to connect through the gateway:\n{launcher.log()[-3000:]}")
        rfb = RfbClient(UnixSocketFrames(launcher.socket))

        # inside the window: the detector moves to 10 m, RBV follows until DMOV
        type_into(rfb, *DET_Z_VAL, "10")
        wait_for(lambda: direct.get("D11:DET:Z.VAL", timeout=5) == 10.0, 15, "DET:Z.VAL = 10 at the IOC")
        wait_for(lambda: direct.get("D11:DET:Z.DMOV", timeout=5) == 1
                 and direct.get("D11:DET:Z.RBV", timeout=5) == 10.0, 30, "the detector to arrive at 10 m")

        # a run started from the panel writes a new NeXus file into the proposal's data
        before = set((tmp_path / "data").rglob("*.nxs"))
        number = direct.get("D11:RUN:NUMBER", timeout=5)
        rfb.screen()
        ARTIFACTS.mkdir(exist_ok=True)
        rfb.save_png(ARTIFACTS / "instrument-panel-D11-gateway.png")
        rfb.click(*START_RUN)
        wait_for(lambda: direct.get("D11:RUN:NUMBER", timeout=5) > number, 30, "the run to start")
        new = wait_for(lambda: set((tmp_path / "data").rglob("*.nxs")) - before, 30, "the run's file")
        assert [p.parent.name for p in new] == ["P-2026-011"]
        rfb.screen()
        rfb.save_png(ARTIFACTS / "instrument-panel-D11-gateway-run.png")
        assert "write refused" not in launcher.log()

        # the window is over: the gateway re-evaluates, the next write is refused, visibly
        today.day = AFTER_WINDOW
        evaluations = gateway.evaluations
        wait_for(lambda: gateway.evaluations > evaluations, 10, "a re-evaluation")
        position = direct.get("D11:SAMPLE:X.VAL", timeout=5)
        type_into(rfb, *SAMPLE_X_VAL, "5")
        wait_for(lambda: "write refused" in launcher.log(), 15, "the refused write to be shown")
        assert "D11:SAMPLE:X.VAL" in launcher.log() and "denied" in launcher.log()
        assert direct.get("D11:SAMPLE:X.VAL", timeout=5) == position
        rfb.screen()
        rfb.save_png(ARTIFACTS / "instrument-panel-D11-gateway-refused.png")
        rfb.close()
    finally:
        if launcher.proc.poll() is None:
            launcher.proc.terminate()
            try:
                launcher.proc.wait(20)
            except Exception:
                launcher.proc.kill()
                launcher.proc.wait()
