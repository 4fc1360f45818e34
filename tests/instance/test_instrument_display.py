"""The instrument panel for real: a PVAccess server, the panel's Xvnc, PyDM connected and drawn.

The server is a small p4p server in this process standing for the instrument's PVA face (the
PV names and types of docs/instrument.md), bound to 127.0.0.1 on free ports; the panel reaches
it as an instance reaches the gateway, through ``EPICS_PVA_NAME_SERVERS`` with no UDP search.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from p4p.nt import NTEnum, NTScalar
from p4p.server import Server
from p4p.server.thread import SharedPV

from tests.instance.jupyter import ARTIFACTS, REPO, JupyterServer
from tests.instance.test_desktop_launcher import Launcher, assert_all_gone
from tests.rfb import RfbClient
from tests.support import free_port, wait_for

pytestmark = pytest.mark.root  # starts Xvnc, openbox and PyDM from the instance env

INSTANCE_PYTHON = os.environ.get("VISA_INSTANCE_ENV", "/opt/visahub/instance-env") + "/bin/python"
MOTORS = ["DET:Z", "SAMPLE:X", "SAMPLE:Y"]
CHANNELS = 21  # 3 motors x (VAL, RBV, DMOV), temperature 3, shutter, rate, run control 7
REFUSAL = "put refused by the gateway: read-only for this instance"


class _Handler:
    """Accept puts (post the new value) unless the PV is refused, as the gateway would."""

    def __init__(self, refused: bool) -> None:
        self.refused = refused

    def put(self, pv: SharedPV, op) -> None:
        if self.refused:
            op.done(error=REFUSAL)
            return
        pv.post(op.value())
        op.done()


class FakeInstrument:
    """The PVs of one instrument (docs/instrument.md's table) on a p4p server."""

    def __init__(self, instrument: str, motors: list[str], port: int, refuse: set[str] = frozenset()) -> None:
        self.port = port
        self.pvs: dict[str, SharedPV] = {}

        def add(name: str, nt, initial, writable: bool = False) -> None:
            full = f"{instrument}:{name}"
            self.pvs[full] = SharedPV(nt=nt, handler=_Handler(full in refuse or not writable))
            self.pvs[full].open(initial, timestamp=time.time())

        double = NTScalar("d", display=True)
        for m in motors:
            add(f"{m}.VAL", double, 2.0, writable=True)
            add(f"{m}.RBV", double, 2.0)
            add(f"{m}.DMOV", NTScalar("i"), 1)
            add(f"{m}.DESC", NTScalar("s"), m.lower())
        add("TEMP:SP", double, 295.0, writable=True)
        add("TEMP:RBV", double, 295.0)
        add("TEMP:SETTLED", NTScalar("i"), 1)
        add("SHUTTER", NTEnum(), {"index": 0, "choices": ["Closed", "Open"]}, writable=True)
        add("DET:RATE", double, 0.0)
        add("RUN:START", NTScalar("i"), 0, writable=True)
        add("RUN:STOP", NTScalar("i"), 0, writable=True)
        add("RUN:PROPOSAL", NTScalar("s"), "", writable=True)
        add("RUN:STATE", NTEnum(), {"index": 0, "choices": ["Idle", "Running"]})
        add("RUN:NUMBER", NTScalar("i"), 0)
        add("RUN:MESSAGE", NTScalar("s"), "")
        add("RUN:FILE", NTScalar("s"), "")
        self.server: Server | None = None

    def start(self) -> FakeInstrument:
        self.server = Server(providers=[self.pvs], useenv=False, conf={
            "EPICS_PVAS_INTF_ADDR_LIST": "127.0.0.1",
            "EPICS_PVAS_SERVER_PORT": str(self.port),
            "EPICS_PVAS_BROADCAST_PORT": str(free_port()),
            "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": "NO",
            "EPICS_PVAS_BEACON_ADDR_LIST": "",
        })
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def client_env(self) -> dict[str, str]:
        """The route G2 gives an instance: one TCP name server, no UDP search."""
        return {
            "EPICS_PVA_NAME_SERVERS": f"127.0.0.1:{self.port}",
            "EPICS_PVA_AUTO_ADDR_LIST": "NO",
            "EPICS_PVA_ADDR_LIST": "",
        }

    def value(self, name: str) -> object:
        return self.pvs[name].current().raw.value

    def post(self, name: str, value: object) -> None:
        self.pvs[name].post(value, timestamp=time.time())


@pytest.fixture(autouse=True)
def _panel_programs() -> None:
    """Fail loudly (never skip) when the panel's packages are missing."""
    assert os.path.exists("/usr/bin/Xvnc"), "Xvnc missing: run `make setup`"
    probe = subprocess.run([INSTANCE_PYTHON, "-c", "import pydm, p4p, PyQt5"], capture_output=True)
    assert probe.returncode == 0, f"the instance env lacks PyDM: run `make setup`\n{probe.stderr[-500:]!r}"


@pytest.fixture
def ioc() -> Iterator[FakeInstrument]:
    server = FakeInstrument("D11", MOTORS, free_port(), refuse={"D11:SAMPLE:X.VAL"}).start()
    yield server
    server.stop()


class UnixSocketFrames:
    """What tests.rfb.RfbClient needs of a websocket, over the display's unix socket."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(path)

    def send_binary(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> bytes:
        return self.sock.recv(1 << 20)

    def close(self) -> None:
        self.sock.close()


def curve_pixels(rfb: RfbClient, colour: tuple[int, int, int] = (0x1A, 0x73, 0xE8)) -> int:
    """Pixels of the plot's curve colour in the plot's area, below its legend (BGRX frame)."""
    bgr = bytes(reversed(colour))
    count = 0
    for y in range(160, rfb.height - 40):
        row = rfb.fb[(y * rfb.width + 700) * rfb.bpp:(y + 1) * rfb.width * rfb.bpp]
        count += sum(1 for i in range(0, len(row), rfb.bpp) if row[i:i + 3] == bgr)
    return count


def has_focus_frame(rfb: RfbClient, x: int, y: int) -> bool:
    """Is the line edit centred at (x, y) drawn with Qt's blue focus frame (its top edge)?"""
    for row in range(y - 13, y - 8):
        i = (row * rfb.width + x) * rfb.bpp
        blue, red = rfb.fb[i], rfb.fb[i + 2]
        if blue - red > 80:
            return True
    return False


def type_into(rfb: RfbClient, x: int, y: int, text: str) -> None:
    """Click a field, wait until it is drawn focused, replace its text, press Enter."""
    rfb.click(x, y)
    wait_for(lambda: rfb.screen() and has_focus_frame(rfb, x, y), 10, f"the field at {x},{y} to take the focus")
    rfb.key(0xFFE3, True)  # Control+A
    rfb.type("a")
    rfb.key(0xFFE3, False)
    rfb.type(text + "\n")


def test_panel_connects_draws_writes_and_shows_refused_writes(ioc: FakeInstrument, tmp_path: Path) -> None:
    command = [INSTANCE_PYTHON, "-m", "visa_instance.instrument_launcher",
               "--instrument", "D11", "--motors", ",".join(MOTORS)]
    launcher = Launcher(tmp_path / "panel", command, PYTHONPATH=str(REPO), **ioc.client_env())
    try:
        launcher.wait_ready(40)
        wait_for(lambda: f"connected {CHANNELS}/{CHANNELS} channels" in launcher.log(), 30,
                 f"PyDM to connect its channels:\n{launcher.log()[-3000:]}")
        names = {p.comm for p in launcher.family()}
        assert {"Xvnc", "openbox"} <= names, names

        rfb = RfbClient(UnixSocketFrames(launcher.socket))
        assert (rfb.width, rfb.height, rfb.name) == (1280, 720, "Instrument control — D11")
        ARTIFACTS.mkdir(exist_ok=True)
        before = rfb.screen()
        rfb.save_png(ARTIFACTS / "instrument-panel-D11.png")

        # a readback changing on the IOC is drawn
        ioc.post("D11:DET:Z.RBV", 12.5)
        wait_for(lambda: rfb.screen() != before, 10, "the new readback to be drawn")

        # the live plot follows the detector rate
        assert curve_pixels(rfb) == 0
        for rate in (4000.0, 9000.0, 12000.0, 11000.0):  # PyDM plots at arrival: one vertical stroke
            ioc.post("D11:DET:RATE", rate)
        wait_for(lambda: rfb.screen() and curve_pixels(rfb) > 50, 10, "the rate's curve to be drawn")

        # a write from the panel reaches the IOC (layout: 1280x720, setpoints at x=288)
        type_into(rfb, 288, 144, "7.5")
        wait_for(lambda: ioc.value("D11:DET:Z.VAL") == 7.5, 10, "DET:Z.VAL = 7.5 at the IOC")
        assert "write refused" not in launcher.log()

        # a write the gateway refuses is shown, not silently dropped
        rfb.screen()
        assert not has_focus_frame(rfb, 288, 173)
        type_into(rfb, 288, 173, "9")
        wait_for(lambda: "write refused" in launcher.log(), 10, "the refused write to be reported")
        assert "D11:SAMPLE:X.VAL" in launcher.log() and REFUSAL in launcher.log()
        assert ioc.value("D11:SAMPLE:X.VAL") == 2.0
        rfb.screen()
        rfb.save_png(ARTIFACTS / "instrument-panel-D11-refused.png")
        rfb.close()

        family = launcher.family()
        launcher.proc.send_signal(signal.SIGTERM)
        assert launcher.proc.wait(20) == 0
        assert_all_gone(family, launcher.proc.pid)
        assert not os.path.exists(launcher.socket)
    finally:
        if launcher.proc.poll() is None:
            launcher.proc.kill()
            launcher.proc.wait()


def _get(server: JupyterServer, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"{server.url}{path}?token={server.token}", timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_panel_through_jupyter_server(ioc: FakeInstrument, tmp_path: Path) -> None:
    """The instance env's server offers D11 only, and its websocket reaches the panel."""
    import websocket

    server = JupyterServer(tmp_path / "server", env_extra={
        "VISA_INSTRUMENTS": "D11", "PYTHONPATH": str(REPO), **ioc.client_env(),
    }, python=INSTANCE_PYTHON)
    server.start()
    try:
        status, body = _get(server, "server-proxy/servers-info")
        names = [s["name"] for s in json.loads(body)["server_processes"]]
        assert status == 200 and "instrument-d11" in names and "instrument-in5" not in names
        status, body = _get(server, "visa/instrument/D11")
        assert status == 200 and b'"websocketPath": "instrument-d11/"' in body
        assert b"read-only" not in body  # the owner may write
        assert _get(server, "visa/instrument/IN5")[0] == 404

        ws = websocket.create_connection(
            f"ws://127.0.0.1:{server.port}/instrument-d11/?token={server.token}", timeout=60)
        rfb = RfbClient(ws)
        assert rfb.name == "Instrument control — D11"
        wait_for(lambda: f"connected {CHANNELS}/{CHANNELS} channels" in server.log(), 30,
                 f"PyDM to connect through the server's display:\n{server.log()[-3000:]}")
        rfb.screen()
        rfb.save_png(ARTIFACTS / "instrument-panel-D11-via-server.png")
        rfb.close()
    finally:
        server.stop(30)

    # no experiment on any instrument: no tile, no page, no panel process
    server = JupyterServer(tmp_path / "none", env_extra={"PYTHONPATH": str(REPO)}, python=INSTANCE_PYTHON)
    server.start()
    try:
        status, body = _get(server, "server-proxy/servers-info")
        assert status == 200 and b"instrument" not in body
        assert _get(server, "visa/instrument/D11")[0] == 404
        assert _get(server, "instrument-d11/")[0] == 404
    finally:
        server.stop(30)


def test_desktop_menu_opens_the_panel(ioc: FakeInstrument, tmp_path: Path) -> None:
    """On the instance's desktop, the right-click menu written at the server's start opens the
    panel as a window; it goes with the desktop."""
    from visa_instance.instrument import write_openbox_menu

    home = tmp_path / "home"
    home.mkdir()
    assert write_openbox_menu(str(home / ".config" / "openbox" / "menu.xml"), INSTANCE_PYTHON, {"D11": MOTORS})
    desktop = Launcher(tmp_path / "desktop", None, HOME=str(home), PYTHONPATH=str(REPO), **ioc.client_env())
    try:
        desktop.wait_ready(30)
        rfb = RfbClient(UnixSocketFrames(desktop.socket))
        before = rfb.settled()  # the panel and file manager drawn: a change now is the menu
        for mask in (0, 4, 0):  # right button (mask bit 2) pressed and released on the background
            rfb.ws.send_binary(struct.pack(">BBHH", 5, mask, 1000, 600))
        wait_for(lambda: rfb.screen() != before, 10, "the menu to open")
        rfb.settled()  # the whole menu drawn before its entry is clicked
        rfb.click(1080, 627)  # its second entry, "Instrument control — D11"
        wait_for(lambda: f"connected {CHANNELS}/{CHANNELS} channels" in desktop.log(), 40,
                 f"the panel to open and connect:\n{desktop.log()[-3000:]}")
        rfb.screen()
        rfb.save_png(ARTIFACTS / "instrument-panel-D11-on-desktop.png")
        rfb.close()
        family = desktop.family()
        assert any("visa_instance.instrument_panel" in _cmdline(p.pid) for p in family)
        desktop.proc.send_signal(signal.SIGTERM)
        assert desktop.proc.wait(20) == 0
        assert_all_gone(family, desktop.proc.pid)
    finally:
        if desktop.proc.poll() is None:
            desktop.proc.kill()
            desktop.proc.wait()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
