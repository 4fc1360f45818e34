"""Instrument control in Chromium through the real hub (issue 18): the session hub runs D11's IOC
and the gateway as its services; alice's sandbox instance of P-2026-011 reaches D11 only through
its route to the gateway.

alice (INSTRUMENT_CONTROL in E-2026-0110's window) opens "Instrument control — D11" from Lab's
launcher, types a detector distance and watches the readback drawn in the page follow it until the
IOC says the motor is done; "Start run" writes a NeXus file that Lab lists in the proposal's data.
bob (same proposal, no INSTRUMENT_CONTROL) sees the values, and his write is refused, visibly.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from p4p.client.thread import Context

from tests.browser import chromium, demo_login
from tests.hubtools import Hub, unique
from tests.instance import instrument_ui as ui
from tests.support import wait_for
from visa_instruments.gateway import tcp_client_conf

pytestmark = [pytest.mark.root, pytest.mark.browser]

PROPOSAL = "P-2026-011"
TILE = "Instrument control — D11"
SAMPLE_X_VAL = (288, 170)
WRITE_ERROR = (9, 57, 720, 24)  # the panel's red "Write refused: ..." line, empty until a refusal


@pytest.fixture
def d11(hub: Hub) -> Iterator[Context]:
    """A client of D11's IOC itself (its PVA port on the host), to check what the page shows."""
    port = int((hub.state / "visa_ioc_d11_pva_port").read_text())
    with Context("pva", conf=tcp_client_conf([f"127.0.0.1:{port}"]), useenv=False) as direct:
        yield direct


def red_pixels(page, region: tuple[int, int, int, int]) -> int:
    data = page.evaluate("""([x, y, w, h]) => Array.from(document.querySelector('#visa-screen canvas')
        .getContext('2d').getImageData(x, y, w, h).data)""", list(region))
    return sum(1 for i in range(0, len(data), 4) if data[i] > 140 and data[i + 1] < 90 and data[i + 2] < 90)


def test_alice_moves_d11_and_starts_a_run_that_lab_lists(hub: Hub, d11: Context, artifacts) -> None:
    with chromium() as browser:
        lab = demo_login(browser, hub.url, "alice", width=1280, height=720 + ui.BAR)
        server = ui.new_instance(lab, unique("Beamtime"))
        base = f"{hub.url}/user/alice/{server}/"
        tile = lab.locator(".jp-LauncherCard", has_text=TILE)
        with lab.context.expect_page() as opened:
            tile.click()
        tab = opened.value
        tab.set_default_timeout(60_000)
        tab.wait_for_load_state()
        assert tab.url == f"{base}visa/instrument/D11"
        ui.wait_connected(tab)
        assert tab.locator("#visa-read-only").count() == 0  # alice may write

        # a setpoint typed in the page: the IOC moves, the readback drawn in the page follows
        start = d11.get("D11:DET:Z.RBV", timeout=5)
        target = 12.0 if abs(start - 12.0) >= 2 else 6.0
        drawn = {ui.region_digest(tab, ui.DET_Z_RBV)}
        # A panel that has just connected can drop the first keys (CI: no put reached the gateway,
        # no refusal drawn): type again then, as a person would; a refusal or a third loss fails.
        for attempt in range(3):
            ui.type_setpoint(tab, *ui.DET_Z_VAL, f"{target:g}")
            try:
                wait_for(lambda: d11.get("D11:DET:Z.VAL", timeout=5) == target, 10,
                         f"DET:Z.VAL = {target} from the page")
                break
            except TimeoutError as e:  # say why: refused (red line, gateway's audit), or never sent
                refused = red_pixels(tab, WRITE_ERROR)
                if attempt < 2 and not refused:
                    continue
                tab.screenshot(path=str(artifacts / "instrument-hub-D11-setpoint-lost.png"))
                gateway = [line for line in hub.log_path.read_text(errors="replace").splitlines()
                           if "nstrument" in line][-15:]
                raise AssertionError(f"{e} (attempt {attempt + 1}); red pixels in the write-error line: {refused}; "
                                     f"VAL now {d11.get('D11:DET:Z.VAL', timeout=5)}; gateway log:\n"
                                     + "\n".join(gateway)) from None
        positions = set()

        def arrived() -> bool:
            drawn.add(ui.region_digest(tab, ui.DET_Z_RBV))
            positions.add(float(d11.get("D11:DET:Z.RBV", timeout=5)))
            return target in positions and d11.get("D11:DET:Z.DMOV", timeout=5) == 1

        wait_for(arrived, 40, "the detector to arrive", interval=0.2)
        assert len(positions) >= 3, positions  # it moved through positions between start and target
        assert len(drawn) >= 3, f"the page drew {len(drawn)} readbacks while the IOC went through {len(positions)}"
        tab.screenshot(path=str(artifacts / "instrument-hub-D11-moved.png"))

        # "Start run": a new NeXus file in the proposal's data, listed by Lab, read-only there
        listing = f"{base}api/contents/data/{PROPOSAL}"
        before = {f["name"] for f in lab.request.get(listing).json()["content"]}
        number = d11.get("D11:RUN:NUMBER", timeout=5)
        ui.click(tab, *ui.START_RUN)
        wait_for(lambda: d11.get("D11:RUN:NUMBER", timeout=5) > number, 30, "the run started from the page")
        new_file = f"{int(d11.get('D11:RUN:NUMBER', timeout=5))}.nxs"
        try:
            listed = wait_for(lambda: {f["name"]: f for f in lab.request.get(listing).json()["content"]}
                              .get(new_file), 30, f"Lab to list {new_file}")
            assert new_file not in before and listed["writable"] is False, listed
            tab.screenshot(path=str(artifacts / "instrument-hub-D11-run.png"))
            lab.goto(f"{base}lab/tree/data/{PROPOSAL}")
            lab.locator(".jp-DirListing-itemText", has_text=new_file).first.wait_for()
            lab.screenshot(path=str(artifacts / "instrument-hub-D11-lab-lists-run.png"))
        finally:
            d11.put("D11:RUN:STOP", 1, timeout=10)


def test_bob_sees_d11_and_his_write_is_refused_visibly(hub: Hub, d11: Context, artifacts) -> None:
    with chromium() as browser:
        page = demo_login(browser, hub.url, "bob", width=1280, height=720 + ui.BAR)
        server = ui.new_instance(page, unique("Reading"))
        page.goto(f"{hub.url}/user/bob/{server}/visa/instrument/D11")
        ui.wait_connected(page)
        position = d11.get("D11:SAMPLE:X.VAL", timeout=5)
        assert red_pixels(page, WRITE_ERROR) == 0
        ui.type_setpoint(page, *SAMPLE_X_VAL, f"{position + 3:g}")
        wait_for(lambda: red_pixels(page, WRITE_ERROR) > 50, 20, "the refused write shown in red")
        assert d11.get("D11:SAMPLE:X.VAL", timeout=5) == position
        page.screenshot(path=str(artifacts / "instrument-hub-D11-refused-bob.png"))
