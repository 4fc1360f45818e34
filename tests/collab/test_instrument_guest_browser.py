"""A GUEST at the instrument tab, in Chromium through the hub (issue 18): alice's sandbox instance
of P-2026-011 may write to D11 (her INSTRUMENT_CONTROL), and one panel is shared by everyone in
it. dave, a GUEST member, sees the values and the read-only note; his clicks and keys reach
nothing even when his page is made to send them (the instance's server drops them), while alice's,
on the same panel, move the instrument."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from p4p.client.thread import Context

from tests.browser import chromium, demo_login
from tests.collab.test_browser_collab import authorize_if_asked
from tests.hubtools import Hub
from tests.instance import instrument_ui as ui
from tests.support import wait_for
from visa_instruments.gateway import tcp_client_conf

pytestmark = [pytest.mark.root, pytest.mark.browser]

OWNER, PROPOSAL = "alice", "P-2026-011"
NOTE = "read-only: you cannot write to the instrument"
SAMPLE_Y_VAL, SAMPLE_Y_RBV = (288, 197), (495, 188, 100, 20)


@pytest.fixture(scope="module")
def server(collab_hub: Hub, person) -> Iterator[str]:
    """alice's running instance of P-2026-011, dave a GUEST in it."""
    person("dave")
    r = person(OWNER).new_instance(name="Instrument guest", proposal=PROPOSAL, plan="sandbox-small",
                                   screen="1280x720", keyboard="us")
    assert r.status_code == 302, r.text[:500]
    name = r.headers["location"].rsplit("/", 1)[1]
    collab_hub.wait_ready(OWNER, name)
    r = person(OWNER).collab("POST", f"instances/{OWNER}/{name}/members", {"member": "dave", "role": "guest"})
    assert r.status_code == 201, r.text
    yield name
    collab_hub.delete_server(OWNER, name)


@pytest.fixture
def d11(collab_hub: Hub) -> Iterator[Context]:
    port = int((collab_hub.state / "visa_ioc_d11_pva_port").read_text())
    with Context("pva", conf=tcp_client_conf([f"127.0.0.1:{port}"]), useenv=False) as direct:
        yield direct


def open_tab(browser, hub: Hub, name: str, server: str):
    page = demo_login(browser, hub.url, name, width=1280, height=720 + ui.BAR)
    page.goto(f"{hub.url}/user/{OWNER}/{server}/visa/instrument/D11")
    authorize_if_asked(page)
    ui.wait_connected(page)
    return page


def test_the_guest_sees_d11_and_cannot_write_the_owner_can(collab_hub: Hub, server: str, d11: Context,
                                                           artifacts) -> None:
    with chromium() as browser:
        owner = open_tab(browser, collab_hub, OWNER, server)
        guest = open_tab(browser, collab_hub, "dave", server)
        assert owner.locator("#visa-read-only").count() == 0
        assert NOTE in guest.locator("#visa-read-only").inner_text()
        assert guest.evaluate("window.visaDesktop.viewOnly") is True

        # dave's page is made to send input anyway: a click on DET:Z's setpoint, a value, Enter
        distance = d11.get("D11:DET:Z.VAL", timeout=5)
        guest.evaluate("window.visaDesktop.rfb.viewOnly = false")
        ui.click(guest, *ui.DET_Z_VAL)
        guest.keyboard.press("Control+A")
        guest.keyboard.type(f"{distance + 3:g}")
        guest.keyboard.press("Enter")

        # then alice, on the same panel, moves a sample axis: her input arrives, and dave sees it
        position = float(d11.get("D11:SAMPLE:Y.VAL", timeout=5))
        target = position + 1.5 if position < 10 else position - 1.5
        seen_by_guest = ui.region_digest(guest, SAMPLE_Y_RBV)
        ui.type_setpoint(owner, *SAMPLE_Y_VAL, f"{target:g}")
        wait_for(lambda: d11.get("D11:SAMPLE:Y.VAL", timeout=5) == target, 15, "alice's SAMPLE:Y setpoint")
        wait_for(lambda: ui.region_digest(guest, SAMPLE_Y_RBV) != seen_by_guest, 15,
                 "dave to see SAMPLE:Y move (its readback drawn in his page)")
        assert d11.get("D11:DET:Z.VAL", timeout=5) == distance  # nothing of dave's reached D11
        guest.screenshot(path=str(artifacts / "instrument-hub-D11-guest.png"))
