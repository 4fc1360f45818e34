"""The instrument tab (noVNC page of a PyDM panel) driven from Playwright: shared by the browser
tests, with or without a hub, and by bench/instrument_browser.py.

Positions are on the panel's 1280x720 screen (the framebuffer, as `RfbClient` sees it); they are
mapped onto the page through the canvas's box, so they hold whatever noVNC's scale.
"""
from __future__ import annotations

import hashlib

from tests.support import wait_for

BAR = 26  # the page's status bar above the screen (desktop.css)
DET_Z_VAL = (288, 143)  # the DET:Z setpoint field
DET_Z_RBV = (495, 134, 100, 20)  # x, y, width, height of DET:Z's readback text
TEMP_SP = (178, 258, 170, 24)  # the temperature setpoint's text (its field shows the PV at once)
START_RUN = (60, 418)
# The panel's rows sit up to ~10 px lower in some starts (Qt spreads the spare height): the
# points above are inside their widgets either way, and the focus check looks above and below.

REGION_PIXELS = """([x, y, w, h]) => {
  const canvas = document.querySelector('#visa-screen canvas');
  return Array.from(canvas.getContext('2d').getImageData(x, y, w, h).data).join(',');
}"""

# Qt draws a focused line edit with a blue frame: its top or bottom edge, within 14 rows of (x, y)
# (the next field's frame is further).
FOCUSED = """([x, y]) => {
  const data = document.querySelector('#visa-screen canvas').getContext('2d').getImageData(x, y - 14, 1, 29).data;
  for (let i = 0; i < data.length; i += 4) if (data[i + 2] - data[i] > 80) return true;
  return false;
}"""

# Watch a region from the page's own frames: each change is stamped with the page's clock
# (performance.timeOrigin + now(), the same epoch as Python's time.time()).
WATCH_REGION = """([x, y, w, h]) => {
  const canvas = document.querySelector('#visa-screen canvas');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const read = () => ctx.getImageData(x, y, w, h).data.join(',');
  const watch = window.visaWatch = { changes: [], last: read(), stop: false };
  const frame = () => {
    if (watch.stop) return;
    const now = read();
    if (now !== watch.last) {
      watch.last = now;
      watch.changes.push(performance.timeOrigin + performance.now());
    }
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
}"""


def new_instance(page, name: str, proposal: str = "P-2026-011") -> str:
    """Create a sandbox instance from the hub's home page (1280x720 screen, US keyboard: what the
    points above assume); its server name once Lab shows."""
    page.fill("#visa-name", name)
    page.select_option("#visa-proposal", proposal)
    page.select_option("#visa-screen", "1280x720")
    page.select_option("#visa-keyboard", "us")
    page.click("#visa-create")
    page.wait_for_url("**/lab**", timeout=120_000)
    return page.url.split("/user/", 1)[1].split("/")[1]


def wait_connected(page, timeout: float = 60) -> None:
    """Until noVNC is connected and something of the panel is drawn."""
    from tests.browser import CANVAS_COLOURS

    page.wait_for_function("window.visaDesktop && window.visaDesktop.state === 'connected'", timeout=timeout * 1000)
    page.wait_for_function(f"({CANVAS_COLOURS})() >= 3", timeout=timeout * 1000)


def region_digest(page, region: tuple[int, int, int, int]) -> str:
    """A digest of the pixels of `region` (x, y, width, height) of the screen as drawn in the page."""
    return hashlib.sha256(page.evaluate(REGION_PIXELS, list(region)).encode()).hexdigest()


def click(page, x: int, y: int) -> None:
    """Click the screen's point (x, y), wherever and however large the page draws the canvas."""
    box = page.locator("#visa-screen canvas").bounding_box()
    width, height = page.evaluate("[document.querySelector('#visa-screen canvas').width,"
                                  " document.querySelector('#visa-screen canvas').height]")
    page.mouse.click(box["x"] + x * box["width"] / width, box["y"] + y * box["height"] / height)


def type_setpoint(page, x: int, y: int, text: str, timeout: float = 30) -> None:
    """Click the field at (x, y) until it is drawn focused (PyDM enables it once its channel
    connects), replace its text, press Enter."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    def focused() -> bool:
        click(page, x, y)
        try:
            page.wait_for_function(f"({FOCUSED})({[x, y]})", timeout=1000)
        except PlaywrightTimeout:
            return False
        return True

    wait_for(focused, timeout, f"the field at {x},{y} to take the focus", interval=0.1)
    page.keyboard.press("Control+A")
    page.keyboard.type(text)
    page.keyboard.press("Enter")
