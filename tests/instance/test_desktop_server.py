"""A real jupyter-server with our extension: access control, then the desktop in Chromium."""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.browser import CANVAS_COLOURS, chromium
from tests.instance.desktop_x import X, launcher_of
from tests.instance.jupyter import ARTIFACTS, JupyterServer, descendants, group_members, still_alive
from tests.support import wait_for


def raw_request(
    server: JupyterServer, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` exactly as written (no client-side ``..`` normalisation, no redirects)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@pytest.mark.root
def test_access_control(jupyter_server: Callable[..., JupyterServer]) -> None:
    server = jupyter_server()
    token = f"token={server.token}"

    # not logged in: the page redirects to the login page (the code it loads is public, as
    # JupyterLab's own static files are: browsers fetch ES modules without an XSRF header)
    status, headers, body = raw_request(server, "/visa/desktop")
    assert status == 302 and "/login" in headers["Location"]
    assert b"visaDesktop" not in body
    for path in ("/visa/novnc/core/rfb.js", "/visa/static/desktop.js"):
        assert raw_request(server, path)[0] == 200
    # an unauthenticated websocket to the VNC bridge: refused, and no desktop started for it
    status, _, _ = raw_request(server, "/desktop/", {
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    })
    assert status == 403
    assert not launcher_of(server)

    # noVNC's modules are served, traversal and noVNC's own app are not
    status, headers, body = raw_request(server, f"/visa/novnc/core/rfb.js?{token}")
    assert status == 200 and b"export default class RFB" in body
    assert "javascript" in headers["Content-Type"]
    for path in (
        "/visa/novnc/../../etc/passwd",
        "/visa/novnc/core/../../../../etc/passwd",
        "/visa/novnc/core/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/visa/novnc/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/visa/novnc/%2Fetc%2Fpasswd",
        "/visa/novnc//etc/passwd",
        "/visa/static/../../../../../etc/passwd",
        "/visa/novnc/vnc.html",
        "/visa/novnc/app/ui.js",
    ):
        status, _, body = raw_request(server, f"{path}?{token}")
        assert status in (400, 403, 404), (path, status)
        assert b"root:" not in body

    # the Lab launcher tile opens our page, with our icon
    status, _, body = raw_request(server, f"/server-proxy/servers-info?{token}")
    (desktop,) = [s for s in json.loads(body)["server_processes"] if s["name"] == "desktop"]
    assert desktop["launcher_entry"]["path_info"] == "visa/desktop"
    assert desktop["launcher_entry"]["title"] == "Desktop"
    status, _, body = raw_request(server, desktop["launcher_entry"]["icon_url"] + f"?{token}")
    assert status == 200 and b"<svg" in body
    # the bridge only speaks websocket
    status, _, _ = raw_request(server, f"/desktop/?{token}")
    assert status == 405


# The canvas is as large as the area under the bar, and the framebuffer is that size too (not scaled).
FILLS_THE_SCREEN = """() => {
  const area = document.getElementById('visa-screen').getBoundingClientRect();
  const canvas = document.querySelector('#visa-screen canvas');
  const shown = canvas.getBoundingClientRect();
  return canvas.width === Math.floor(area.width) && canvas.height === Math.floor(area.height)
    && Math.abs(shown.width - area.width) < 1 && Math.abs(shown.height - area.height) < 1;
}"""


@pytest.mark.root
@pytest.mark.browser
def test_desktop_in_chromium(jupyter_server: Callable[..., JupyterServer]) -> None:
    server = jupyter_server(
        VISA_SCREEN="1280x800", VISA_KEYBOARD="fr", VISA_INSTANCE_NAME="Browser test",
        VISA_PROPOSAL="no-such-proposal",
    )
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium() as browser:
        # a window of another shape than the chosen 1280x800 screen: the screen follows the window
        context = browser.new_context(viewport={"width": 1200, "height": 700},
                                      permissions=["clipboard-read", "clipboard-write"])
        page = context.new_page()
        page.goto(f"{server.url}visa/desktop?token={server.token}")
        page.wait_for_function(
            "window.visaDesktop && window.visaDesktop.state === 'connected'", timeout=30_000
        )
        state = page.evaluate("({...window.visaDesktop, rfb: null})")
        assert state["connects"] == 1 and state["retries"] == 0, state  # first try works
        assert state["url"] == f"ws://127.0.0.1:{server.port}/desktop/"
        # the JPEG quality chosen by bench/desktop.py (docs/desktop.md), not noVNC's default 6
        levels = page.evaluate("[window.visaDesktop.rfb.qualityLevel, window.visaDesktop.rfb.compressionLevel]")
        assert levels == [2, 2], levels
        page.wait_for_function(f"({CANVAS_COLOURS})() >= 3", timeout=15_000)
        page.wait_for_function(f"({FILLS_THE_SCREEN})()", timeout=15_000)  # no dark bands
        page.screenshot(path=str(ARTIFACTS / "desktop.png"))
        assert page.text_content("#visa-state-text") == "Connected"
        assert page.is_hidden("#visa-reconnect")

        # the clipboard both ways: copied in the desktop → the browser's clipboard and the panel
        x = X(server)
        try:
            x.copy("copied in the desktop")
            page.wait_for_function("window.visaDesktop.clipboard.browserWrites === 1", timeout=15_000)
            assert page.evaluate("navigator.clipboard.readText()") == "copied in the desktop"
            assert page.input_value("#visa-clipboard-text") == "copied in the desktop"
            # copied elsewhere in the browser, then back to the desktop: it is pasted there
            page.evaluate("navigator.clipboard.writeText('copied in another tab')")
            page.click("#visa-screen canvas")
            wait_for(lambda: x.clipboard() == "copied in another tab", 15, "the browser's clipboard in the desktop")
            page.click("#visa-clipboard-button")  # typed into the panel
            page.fill("#visa-clipboard-text", "typed in the panel")
            wait_for(lambda: x.clipboard() == "typed in the panel", 15, "the panel's text in the desktop")
            page.evaluate("window.visaDesktop.clipboard.pull()")  # back to the screen: the browser's
            assert page.evaluate("window.visaDesktop.clipboard.sent") == "typed in the panel"  # clipboard,
            assert x.clipboard() == "typed in the panel"  # unchanged, is not sent again over the panel's text
            page.screenshot(path=str(ARTIFACTS / "desktop-clipboard.png"))
        finally:
            x.close()

        page.click("#visa-fit")  # "Fixed size": back to the instance's 1280x800, scaled into the window
        page.wait_for_function("document.querySelector('#visa-screen canvas').width === 1280", timeout=15_000)
        assert page.evaluate("document.querySelector('#visa-screen canvas').height") == 800
        assert page.evaluate("localStorage.getItem('visa-desktop-fit')") == "false"

        # the room says view only (as for a GUEST, or a locked room): no clipboard, no screen controls
        # (the server withholds the clipboard itself: test_rfb_server_filter, test_clipboard)
        page.route("**/visa/api/room*", lambda route: route.fulfill(json={
            "role": "user", "level": "view", "view_only": True, "owner_present": False}))
        page.wait_for_function("window.visaDesktop.viewOnly === true", timeout=10_000)
        for control in ("#visa-clipboard-button", "#visa-clipboard", "#visa-fit"):
            assert page.is_hidden(control), control
        assert page.input_value("#visa-clipboard-text") == ""
        page.unroute("**/visa/api/room*")

        (launcher,) = launcher_of(server)
        argv = Path(f"/proc/{launcher.pid}/cmdline").read_bytes().decode().split("\0")
        socket_path = argv[argv.index("--socket") + 1]
        family = descendants(launcher.pid) + [launcher]
        assert {"Xvnc", "openbox", "tint2", "pcmanfm"} <= {p.comm for p in family}

        server.stop()
        wait_for(lambda: not still_alive(family) and not group_members(launcher.pid), 15,
                 f"desktop processes to exit: {still_alive(family)}")
        assert not os.path.exists(os.path.dirname(socket_path)), "socket directory left"
        # the page notices and offers to reconnect
        page.wait_for_function("window.visaDesktop.state === 'disconnected'", timeout=15_000)
        assert page.is_visible("#visa-reconnect")
        page.screenshot(path=str(ARTIFACTS / "desktop-disconnected.png"))
