"""Playwright driving Debian's chromium (no browser download): shared by the browser tests."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support import wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]

# Distinct colours on a sparse grid of the noVNC canvas (0 while there is no framebuffer yet).
CANVAS_COLOURS = """() => {
  const canvas = document.querySelector('#visa-screen canvas');
  if (!canvas || !canvas.width) return 0;
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  const seen = new Set();
  for (let i = 0; i < data.length && seen.size < 64; i += 4 * 97) {
    seen.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
  }
  return seen.size;
}"""

# The desktop is drawn and fills its part of the window: the canvas as tall as #visa-screen, and its
# panel along the bottom (bottom row: at least 3 colours, under 10 % wallpaper — read at the left
# edge half-way down, where no window opens — and under half black, an unpainted window).
PANEL_DRAWN = """() => {
  const screen = document.querySelector('#visa-screen');
  const canvas = document.querySelector('#visa-screen canvas');
  if (!canvas || !canvas.width) return false;
  if (canvas.getBoundingClientRect().height < screen.getBoundingClientRect().height - 2) return false;
  const ctx = canvas.getContext('2d');
  const wall = ctx.getImageData(4, Math.floor(canvas.height / 2), 1, 1).data;
  const row = ctx.getImageData(0, canvas.height - 3, canvas.width, 1).data;
  let same = 0, black = 0;
  const colours = new Set();
  for (let i = 0; i < row.length; i += 4) {
    if (row[i] === wall[0] && row[i + 1] === wall[1] && row[i + 2] === wall[2]) same++;
    if (row[i] + row[i + 1] + row[i + 2] === 0) black++;
    colours.add((row[i] << 16) | (row[i + 1] << 8) | row[i + 2]);
  }
  return colours.size >= 3 && same < 0.1 * canvas.width && black < 0.5 * canvas.width;
}"""


@contextmanager
def chromium() -> Iterator[object]:
    """A headless chromium browser; fails loudly when Debian's chromium is missing."""
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: run `make setup` (Debian package chromium)"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def demo_login(browser, hub_url: str, name: str, width: int = 1400, height: int = 900, timeout: float = 90_000):
    """A new browser context signed in to the hub with a demo account (password `<name>-demo`),
    on its home page; its own cookies, so several people can share one browser."""
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    page.set_default_timeout(timeout)
    page.goto(f"{hub_url}/hub/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", f"{name}-demo")
    page.click("#login_submit")
    page.wait_for_url("**/hub/home")
    return page


def desktop_connected(page) -> bool:
    """Connected yet? A desktop that gave up starting (a slow TCG guest) is retried the way a
    person does: with the page's Reconnect button."""
    state = page.evaluate("window.visaDesktop ? window.visaDesktop.state : ''")
    if state == "disconnected":
        page.click("#visa-reconnect")
    return state == "connected"


def open_vm_desktop(browser, hub_url: str, owner: str, server: str, shot: Path, timeout: float = 300):
    """The owner signed in and on the desktop page of a VM in a 1280×860 window, until it is connected
    and drawn (windows: ≥ 6 colours; the panel along the bottom) and fills the window; a screenshot
    either way.
    (page, seconds from opening the desktop page)."""
    page = demo_login(browser, hub_url, owner, width=1280, height=860, timeout=120_000)
    t0 = time.monotonic()
    page.goto(f"{hub_url}/user/{owner}/{server}/visa/desktop")
    try:
        wait_for(lambda: desktop_connected(page), timeout, f"{owner}'s desktop connected", interval=1)
        page.wait_for_function(f"({CANVAS_COLOURS})() >= 6")
        page.wait_for_function(PANEL_DRAWN)
    finally:
        page.screenshot(path=str(shot))
    assert page.evaluate("document.querySelector('#visa-screen canvas').width") == 1280
    return page, time.monotonic() - t0
