"""Playwright driving Debian's chromium (no browser download): shared by the browser tests."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

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
