"""The instrument tab in Chromium, on the instance side (no hub): the real IOC process, the instance
env's jupyter-server offering D11, its page through noVNC; a setpoint typed in the browser moves
the detector and the readback drawn in the page follows."""

from __future__ import annotations

from pathlib import Path

import pytest
from p4p.client.thread import Context

from tests.browser import CANVAS_COLOURS, chromium
from tests.instance.instrument_ui import BAR, DET_Z_RBV, DET_Z_VAL, region_digest, type_setpoint
from tests.instance.jupyter import ARTIFACTS, REPO, JupyterServer
from tests.instance.test_instrument_display import CHANNELS, INSTANCE_PYTHON
from tests.instruments.gateway_support import start_ioc
from tests.support import wait_for
from visa_instruments.gateway import tcp_client_conf

pytestmark = [pytest.mark.root, pytest.mark.browser]


def test_instrument_tab_in_chromium(tmp_path: Path) -> None:
    process, pva_port = start_ioc(tmp_path)
    server = JupyterServer(tmp_path / "server", python=INSTANCE_PYTHON, env_extra={
        "VISA_INSTRUMENTS": "D11", "PYTHONPATH": str(REPO), **tcp_client_conf([f"127.0.0.1:{pva_port}"]),
    })
    try:
        server.start()
        with chromium() as browser, Context("pva", conf=tcp_client_conf([f"127.0.0.1:{pva_port}"]),
                                            useenv=False) as direct:
            page = browser.new_page(viewport={"width": 1280, "height": 720 + BAR})
            page.goto(f"{server.url}visa/instrument/D11?token={server.token}")
            assert page.title().startswith("Instrument control — D11")
            assert page.locator("#visa-read-only").count() == 0  # the owner may write
            page.wait_for_function("window.visaDesktop && window.visaDesktop.state === 'connected'",
                                   timeout=40_000)
            assert page.evaluate("window.visaDesktop.url") == f"ws://127.0.0.1:{server.port}/instrument-d11/"
            wait_for(lambda: f"connected {CHANNELS}/{CHANNELS} channels" in server.log(), 30, "PyDM's channels")
            page.wait_for_function(f"({CANVAS_COLOURS})() >= 3", timeout=15_000)

            def readback() -> str:
                return region_digest(page, DET_Z_RBV)

            start = direct.get("D11:DET:Z.RBV", timeout=5)
            before = readback()
            type_setpoint(page, *DET_Z_VAL, "12")
            wait_for(lambda: direct.get("D11:DET:Z.VAL", timeout=5) == 12.0, 15, "DET:Z.VAL = 12 from the browser")
            wait_for(lambda: direct.get("D11:DET:Z.RBV", timeout=5) not in (start, 12.0), 15, "the detector moving")
            wait_for(lambda: readback() != before, 10, "the moving readback drawn in the page")
            wait_for(lambda: direct.get("D11:DET:Z.DMOV", timeout=5) == 1, 30, "the detector to arrive")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "instrument-tab-D11.png"))
    finally:
        server.stop(30)
        process.terminate()
        process.wait(timeout=10)
