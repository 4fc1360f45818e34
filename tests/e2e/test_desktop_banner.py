"""The instance desktop page under a real hub embeds the visa-ops banner in its bar (issue 17):
an administrator's notification shows there as text; with nothing to say the banner is hidden."""
from __future__ import annotations

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.browser import chromium
from tests.hubtools import Hub
from tests.ops.test_console_browser import CONSOLE, browser_login

pytestmark = [pytest.mark.root, pytest.mark.browser]

TEXT = "Maintenance <i>Friday</i> from 8:00"


def publish(admin, hub: Hub) -> None:
    admin.goto(f"{hub.url}{CONSOLE}notifications")
    form = admin.locator("#visa-new-notification")
    form.locator("select[name=level]").select_option("info")
    form.locator("input[name=text]").fill(TEXT)
    with admin.expect_navigation():
        form.locator("button[type=submit]").click()


def withdraw(admin, hub: Hub) -> None:
    """Delete every notification: the session's hub is shared with later tests."""
    admin.goto(f"{hub.url}{CONSOLE}notifications")
    while admin.locator("#visa-notifications form[data-method=DELETE] button").count():
        admin.once("dialog", lambda dialog: dialog.accept())
        with admin.expect_navigation():
            admin.locator("#visa-notifications form[data-method=DELETE] button").first.click()


def test_the_desktop_bar_shows_the_ops_banner(hub: Hub, login, artifacts) -> None:
    r = login("alice").new_instance(name="Banner desktop", proposal="P-2026-011", plan="sandbox-small",
                                    screen="1280x720", keyboard="us")
    assert r.status_code == 302, r.text[:500]
    server = r.headers["location"].rsplit("/", 1)[1]
    hub.wait_ready("alice", server)

    with chromium() as browser:
        admin = browser_login(browser, hub, "admin")
        alice = browser_login(browser, hub, "alice")
        publish(admin, hub)
        try:
            alice.goto(f"{hub.url}/user/alice/{server}/visa/desktop")
            alice.wait_for_function("window.visaDesktop && window.visaDesktop.state === 'connected'")
            alice.wait_for_function("window.visaDesktop.banner === 'shown'")
            banner = alice.frame_locator("#visa-ops-banner")
            assert TEXT in banner.locator("body").inner_text()  # as text, not markup
            assert banner.locator("i").count() == 0
            box = alice.locator("#visa-ops-banner").bounding_box()
            assert box and box["height"] >= 20 and box["y"] < 80, box  # under the status row
            alice.screenshot(path=str(artifacts / "desktop-banner.png"))
        finally:
            withdraw(admin, hub)
        alice.reload()
        try:
            alice.wait_for_function("window.visaDesktop && window.visaDesktop.banner === 'empty'"
                                    " && document.getElementById('visa-ops-banner').hidden", timeout=30_000)
        except PlaywrightTimeout:
            text = alice.frame_locator("#visa-ops-banner").locator("body").inner_text()
            raise AssertionError(f"the banner still shows: {text!r}") from None
