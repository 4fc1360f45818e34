"""A person's whole journey in Chromium: log in, create an instance, see the data in JupyterLab,
use the desktop, stop the instance — then check the host keeps nothing of it."""
from __future__ import annotations

import os

import pytest

from tests.browser import CANVAS_COLOURS, chromium
from tests.spawner.sandbox.sandbox_probe import cgroup_pids, processes_of

pytestmark = [pytest.mark.root, pytest.mark.browser]

PROPOSAL = "P-2026-011"


def test_pi_logs_in_creates_instance_uses_lab_and_desktop_then_stops_it(hub, hub_state, artifacts):
    data_files = sorted(os.listdir(hub_state / "data" / PROPOSAL))
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.set_default_timeout(60_000)

        page.goto(f"{hub.url}/hub/login")
        page.screenshot(path=str(artifacts / "flow-1-login.png"))
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", "alice-demo")
        page.click("#login_submit")
        page.wait_for_url("**/hub/home")

        page.fill("#visa-name", "Browser flow")
        page.select_option("#visa-proposal", PROPOSAL)
        page.select_option("#visa-screen", "1280x720")
        page.select_option("#visa-keyboard", "fr")
        page.screenshot(path=str(artifacts / "flow-2-new-instance.png"))
        page.click("#visa-create")
        page.wait_for_url("**/spawn-pending/alice/browser-flow**", wait_until="commit")
        try:  # the progress page follows the spawn and goes on to the instance when it is ready
            page.wait_for_url("**/user/alice/browser-flow/**", wait_until="commit", timeout=120_000)
        except Exception as e:
            page.screenshot(path=str(artifacts / "flow-2b-pending-failed.png"))
            raise AssertionError(f"no redirect to the instance; hub log:\n{hub.log_tail(30)}") from e

        page.goto(f"{hub.url}/user/alice/browser-flow/lab/tree/data/{PROPOSAL}")
        for name in data_files:
            page.locator(".jp-DirListing-itemText", has_text=name).first.wait_for()
        page.screenshot(path=str(artifacts / "flow-3-lab-data.png"))

        page.goto(f"{hub.url}/user/alice/browser-flow/visa/desktop")
        try:
            page.wait_for_function("window.visaDesktop && window.visaDesktop.state === 'connected'")
        except Exception as e:
            page.screenshot(path=str(artifacts / "flow-4-desktop-failed.png"))
            raise AssertionError(f"desktop not connected: {page.evaluate('JSON.stringify({...window.visaDesktop, rfb: null})')}") from e
        page.wait_for_function(f"({CANVAS_COLOURS})() >= 6")  # background, window frame, terminal
        assert page.evaluate("document.querySelector('#visa-screen canvas').width") == 1280
        page.screenshot(path=str(artifacts / "flow-4-desktop.png"))
        running = " ".join(processes_of("alice", "browser-flow"))
        assert "openbox" in running and "tint2" in running, running

        page.goto(f"{hub.url}/hub/home")
        row = page.locator('tr.visa-instance[data-server-name="browser-flow"]')
        assert row.locator(".visa-state").inner_text() == "running"
        assert row.locator("td").nth(1).inner_text() == PROPOSAL
        page.screenshot(path=str(artifacts / "flow-5-home-running.png"))
        row.locator(".visa-stop").click()
        page.locator('tr.visa-instance[data-server-name="browser-flow"][data-state="stopped"]').wait_for()
        page.screenshot(path=str(artifacts / "flow-6-home-stopped.png"))

    assert cgroup_pids("alice", "browser-flow") == set()
    assert processes_of("alice", "browser-flow") == []
    hub.delete_server("alice", "browser-flow")
