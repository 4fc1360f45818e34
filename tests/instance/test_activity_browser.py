"""The desktop page in chromium when the server closes a connection that got no input: it says
why, does not retry by itself, and Reconnect works."""
from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.browser import chromium
from tests.instance.jupyter import JupyterServer

CONNECTED = "window.visaDesktop && window.visaDesktop.state === 'connected'"


@pytest.mark.browser
def test_the_page_explains_an_idle_disconnection_and_reconnects(
        jupyter_server: Callable[..., JupyterServer]) -> None:
    server = jupyter_server(VISA_SCREEN="800x600", VISA_DESKTOP_IDLE_DISCONNECT="4")
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 900, "height": 700})
        page.goto(f"{server.url}visa/desktop?token={server.token}")
        page.wait_for_function(CONNECTED, timeout=30_000)
        page.wait_for_function("window.visaDesktop.state === 'disconnected'", timeout=20_000)
        state = page.evaluate("({...window.visaDesktop, rfb: null})")
        assert state["lastClose"] == {"code": 4408, "reason": "no input for 4 s"}, state
        assert state["retries"] == 0, state  # not a fault: no automatic retry
        assert page.text_content("#visa-state-text") == (
            "Disconnected: no input for 4 s. Your desktop is still running: Reconnect to continue.")
        assert page.is_visible("#visa-reconnect")
        assert page.is_hidden("#visa-ops-banner")  # no hub, no ops service: no banner
        page.click("#visa-reconnect")
        page.wait_for_function(CONNECTED + " && window.visaDesktop.connects === 2", timeout=30_000)
        assert page.text_content("#visa-state-text") == "Connected"
