"""The instrument tab in Chromium, on the instance side (no hub): the real IOC process, the instance
env's jupyter-server offering D11, its page through noVNC; a setpoint typed in the browser moves
the detector and the readback drawn in the page follows."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from p4p.client.thread import Context

from tests.browser import CANVAS_COLOURS, chromium
from tests.instance.jupyter import ARTIFACTS, REPO, JupyterServer
from tests.instance.test_instrument_display import CHANNELS, INSTANCE_PYTHON
from tests.instruments.gateway_support import start_ioc
from tests.support import wait_for
from visa_instruments.gateway import tcp_client_conf

pytestmark = [pytest.mark.root, pytest.mark.browser]

BAR = 26  # the page's status bar above the screen (desktop.css)
DET_Z_VAL = (288, 143)  # on the panel's 1280x720 screen, the real IOC's layout
DET_Z_RBV = (495, 134, 100, 20)  # x, y, width, height of the readback's text

REGION_HASH = """([x, y, w, h]) => {
  const canvas = document.querySelector('#visa-screen canvas');
  return Array.from(canvas.getContext('2d').getImageData(x, y, w, h).data).join(',');
}"""


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
                return hashlib.sha256(page.evaluate(REGION_HASH, list(DET_Z_RBV)).encode()).hexdigest()

            start = direct.get("D11:DET:Z.RBV", timeout=5)
            before = readback()
            page.mouse.click(DET_Z_VAL[0], DET_Z_VAL[1] + BAR)
            page.keyboard.press("Control+A")
            page.keyboard.type("12")
            page.keyboard.press("Enter")
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
