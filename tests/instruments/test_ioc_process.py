"""The real `visa-instrument-ioc` process on its own ports, driven by caproto's Channel Access
client over the network: a motor put is followed by RBV until DMOV, a run writes its file; the IOC's
beacons reach its CA repeater, and it stops at once when the hub stops it."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import h5py
import pytest
from caproto import CLIENT, Beacon, Broadcaster, RepeaterConfirmResponse, RepeaterRegisterRequest
from caproto.sync.client import read, write

from tests.instruments.conftest import CATALOGUE
from tests.support import free_port, wait_for

pytestmark = pytest.mark.root  # starts a process

IOC = Path(sys.executable).parent / "visa-instrument-ioc"


@pytest.fixture
def d11_ioc(d11_process):
    return d11_process.data


@pytest.fixture
def d11_process(tmp_path, monkeypatch):
    """D11 on 127.0.0.1 with free ports, on the demo's 2026-11-24 (P-2026-011 is scheduled)."""
    port, repeater = free_port(), free_port()
    log = open(tmp_path / "ioc.log", "wb")
    process = subprocess.Popen(
        [str(IOC), "--catalogue", str(CATALOGUE), "--instrument", "D11",
         "--data-root", str(tmp_path / "data"), "--port", str(port),
         "--repeater-port", str(repeater), "--pva-port", str(free_port()), "--today", "2026-11-24"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    # the client searches only this IOC (no broadcast, no repeater to spawn)
    for name, value in {"EPICS_CA_ADDR_LIST": "127.0.0.1", "EPICS_CA_AUTO_ADDR_LIST": "NO",
                        "EPICS_CA_SERVER_PORT": str(port), "EPICS_CA_REPEATER_PORT": str(repeater)}.items():
        monkeypatch.setenv(name, value)
    try:
        wait_for(lambda: process.poll() is None and get("D11:RUN:STATE", timeout=0.5) == "Idle",
                 timeout=30, what=f"the IOC to answer (log: {tmp_path / 'ioc.log'})")
        yield SimpleNamespace(data=tmp_path / "data", process=process, repeater=repeater, log=tmp_path / "ioc.log")
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def get(pv: str, timeout: float = 2.0):
    response = read(pv, timeout=timeout, repeater=False)
    data = response.data
    if response.data_type.name in ("CHAR", "TIME_CHAR"):
        return data.tobytes().rstrip(b"\0").decode()
    value = data[0]
    return value.decode() if isinstance(value, bytes) else value


def put(pv: str, value) -> None:
    write(pv, value, notify=True, timeout=5, repeater=False)


def test_a_ca_client_moves_a_motor_and_starts_a_run(d11_ioc):
    assert get("D11:DET:Z.RBV") == 8.0 and get("D11:DET:Z.DMOV") == 1
    put("D11:DET:Z.VELO", 2.0)
    put("D11:DET:Z.VAL", 11.0)  # 1.5 s of travel
    seen: list[float] = []

    def arrived() -> bool:
        seen.append(get("D11:DET:Z.RBV"))
        return seen[-1] == 11.0 and get("D11:DET:Z.DMOV") == 1

    wait_for(arrived, timeout=20, what="D11:DET:Z.RBV to reach 11 with DMOV=1")
    assert any(8.0 < position < 11.0 for position in seen), seen  # it moved, it did not jump

    with pytest.raises(Exception, match="cannot write"):  # a readback is not a setpoint
        put("D11:DET:Z.RBV", 3.0)

    put("D11:SHUTTER", "Open")
    assert get("D11:DET:RATE") > 5000
    put("D11:RUN:START", 1)  # completes once the file is written
    number = get("D11:RUN:NUMBER")
    path = d11_ioc / "P-2026-011" / f"{number:06d}.nxs"
    assert get("D11:RUN:FILE") == str(path)
    assert get("D11:RUN:MESSAGE") == f"run {number} started for P-2026-011 (E-2026-0110)"
    assert get("D11:RUN:STATE") == "Running"
    assert os.stat(path).st_mode & 0o777 == 0o644
    with h5py.File(path, "r") as f:
        assert f["entry/instrument/det_z/value"][()] == pytest.approx(11.0)
        assert f["entry/data/counts"].shape == (128, 128) and f["entry/data/counts"][()].sum() > 0


def test_beacons_reach_the_iocs_repeater_and_sigint_stops_it_at_once(d11_process):
    """A CA client registered with the IOC's repeater hears the IOC's beacons (before, every beacon
    was refused and logged as a traceback); SIGINT, the hub's first stop signal, ends it in < 3 s."""
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(20)  # beacons back off to one per 15 s
    broadcaster = Broadcaster(our_role=CLIENT)
    client.sendto(broadcaster.send(RepeaterRegisterRequest("127.0.0.1")), ("127.0.0.1", d11_process.repeater))
    heard: list = []
    while not any(isinstance(command, Beacon) for command in heard):
        data, _ = client.recvfrom(4096)
        heard += broadcaster.recv(data, ("127.0.0.1", d11_process.repeater))
    assert any(isinstance(command, RepeaterConfirmResponse) for command in heard)
    client.close()

    d11_process.process.send_signal(signal.SIGINT)
    assert d11_process.process.wait(timeout=3) == 0
    log = d11_process.log.read_text()
    assert "Failed to send beacon" not in log and "Traceback" not in log, log
