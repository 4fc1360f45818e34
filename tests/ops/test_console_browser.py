"""The admin console in Chromium on a real demo hub: the dashboard, instances and live sessions
pages as the facility administrator (screenshots in test-artifacts/), an action through the page's
XSRF-signed API call, "connect as support" through the collaboration service, and the 403 page for
someone else."""
from __future__ import annotations

import pytest

from tests.browser import chromium, demo_login
from tests.hubtools import Hub
from tests.support import wait_for

pytestmark = [pytest.mark.root, pytest.mark.browser]

CONSOLE = "/services/visa-ops/admin/"
TIMEOUT = 90_000


def browser_login(browser, hub: Hub, name: str):
    return demo_login(browser, hub.url, name, timeout=TIMEOUT)


def lifecycle(page, owner: str, server: str) -> dict:
    """The instance's lifecycle record from the service's API, asked by the console page's own
    script helper (cookie + the page's XSRF token, as its buttons do)."""
    return page.evaluate("(path) => window.visaOps.api('GET', path)", f"api/instances/{owner}/{server}")


def test_admin_console_dashboard_and_instances(hub: Hub, login, artifacts) -> None:
    r = login("alice").new_instance(name="Console demo", proposal="P-2026-011", plan="sandbox-small",
                                    screen="1280x720", keyboard="us")
    assert r.status_code == 302, r.text[:500]
    server = r.headers["location"].rsplit("/", 1)[1]
    hub.wait_ready("alice", server)

    with chromium() as browser:
        admin = browser_login(browser, hub, "admin")
        admin.goto(f"{hub.url}{CONSOLE}")  # through the hub's OAuth, no confirmation page
        admin.wait_for_selector("#visa-states")
        assert admin.locator('[data-state="running"]').inner_text().strip() == "1"
        assert admin.locator("#visa-capacity").get_attribute("data-known") == "true"  # the hub's capacity call
        assert admin.locator("#visa-plot svg circle").count() >= 1  # at least the sample this visit took
        admin.screenshot(path=str(artifacts / "console-dashboard.png"), full_page=True)

        admin.goto(f"{hub.url}{CONSOLE}instances?user=alice")
        row = admin.locator(f'#visa-instances tr[data-owner="alice"][data-server="{server}"]')
        row.wait_for()
        assert "P-2026-011" in row.inner_text() and "running" in row.inner_text()
        admin.screenshot(path=str(artifacts / "console-instances.png"), full_page=True)

        before = lifecycle(admin, "alice", server)
        assert before["expires_at"], before
        row.locator("input[name=days]").fill("3")
        with admin.expect_navigation():  # the page reloads once the API said yes
            row.locator("button.visa-extend").click()
        after = lifecycle(admin, "alice", server)
        assert after["expires_at"] > before["expires_at"], (before, after)
        assert admin.locator("#visa-error").is_hidden()

        # plans: switched off here, the hub sees it at once (its capacity answer re-reads the file)
        admin.goto(f"{hub.url}{CONSOLE}plans")
        large = admin.locator('#visa-plans tr[data-plan="sandbox-large"]')
        with admin.expect_navigation():
            large.locator("button[type=submit]").click()
        assert "disabled" in large.locator(".visa-availability").inner_text()
        hub_view = {p["id"]: p for p in hub.api("GET", "/visa/capacity").json()["plans"]}
        assert hub_view["sandbox-large"]["enabled"] is False and hub_view["sandbox-small"]["enabled"] is True
        admin.screenshot(path=str(artifacts / "console-plans.png"), full_page=True)
        with admin.expect_navigation():
            large.locator("button[type=submit]").click()  # and back on
        hub_view = {p["id"]: p for p in hub.api("GET", "/visa/capacity").json()["plans"]}
        assert hub_view["sandbox-large"]["enabled"] is True

        # a banner with HTML in it, through the form and the audited API: shown as text
        admin.goto(f"{hub.url}{CONSOLE}notifications")
        form = admin.locator("#visa-new-notification")
        form.locator("select[name=level]").select_option("warn")
        form.locator("input[name=text]").fill("<b>Beam down</b> until noon")
        with admin.expect_navigation():
            form.locator("button[type=submit]").click()
        cell = admin.locator("#visa-notifications td.visa-text").first
        assert cell.inner_text() == "<b>Beam down</b> until noon"
        assert cell.locator("b").count() == 0
        admin.screenshot(path=str(artifacts / "console-notifications.png"), full_page=True)
        admin.once("dialog", lambda dialog: dialog.accept())  # "Delete this notification?"
        with admin.expect_navigation():  # the hub is shared by the session's tests: no banner left behind
            admin.locator("#visa-notifications form[data-method=DELETE] button").first.click()
        assert admin.locator("#visa-notifications td.visa-text").count() == 0

        # live sessions: presence read from the collaboration service with its XSRF token
        admin.goto(f"{hub.url}{CONSOLE}sessions")
        status = admin.locator(f'#visa-sessions tr[data-server="{server}"] .visa-status')
        admin.wait_for_function("(el) => !el.textContent.includes('asking')", arg=status.element_handle())
        assert status.inner_text() == "nobody connected"
        admin.screenshot(path=str(artifacts / "console-sessions.png"), full_page=True)

        # connect as support: the collaboration service's own flow (alice is away: straight in)
        admin.goto(f"{hub.url}{CONSOLE}instances?user=alice")
        with admin.expect_navigation(url=lambda url: "/services/visa-ops/" not in url):
            row.locator("form.visa-support button").click()
        admin.wait_for_load_state()
        if "/hub/api/oauth2/authorize" in admin.url:  # the hub asks once to let the instance identify her
            admin.click("form button[type=submit]")
        admin.wait_for_url(f"**/user/alice/{server}/**")

        other = browser_login(browser, hub, "alice")
        response = other.goto(f"{hub.url}{CONSOLE}instances")
        assert response.status == 403
        assert "Administrators only." in other.locator("#visa-admin-error").inner_text()

        # alice on her desktop: the live sessions page shows her, as owner, from the collab presence
        other.goto(f"{hub.url}/user/alice/{server}/visa/desktop")
        other.wait_for_function("window.visaDesktop && window.visaDesktop.state === 'connected'")

        def alice_listed() -> bool:
            admin.goto(f"{hub.url}{CONSOLE}sessions")
            admin.wait_for_function("() => !document.querySelector('#visa-sessions').textContent.includes('asking')")
            cells = admin.locator(f'#visa-sessions tr[data-server="{server}"] td.visa-session').all_inner_texts()
            return cells[:2] == ["alice", "owner"]

        wait_for(alice_listed, 60, "alice's desktop session on the live sessions page", interval=2)
        admin.screenshot(path=str(artifacts / "console-sessions-live.png"), full_page=True)
