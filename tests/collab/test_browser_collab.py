"""Collaboration in Chromium: access requests answered over the desktop, a guest and the owner on
one desktop, two people editing one notebook."""
from __future__ import annotations

import json
import random
import string

import pytest

from tests.browser import CANVAS_COLOURS, chromium, demo_login
from tests.hubtools import Hub
from tests.spawner.sandbox.sandbox_probe import account
from tests.support import wait_for

pytestmark = [pytest.mark.root, pytest.mark.browser]

OWNER, PROPOSAL = "alice", "P-2026-011"
TIMEOUT = 90_000


@pytest.fixture(scope="module")
def server(collab_hub: Hub, person) -> str:
    for name in ("alice", "bob", "dave", "erin"):
        person(name)
    r = person(OWNER).new_instance(name="Browser share", proposal=PROPOSAL, plan="sandbox-small",
                                   screen="1280x720", keyboard="us")
    assert r.status_code == 302, r.text[:500]
    name = r.headers["location"].rsplit("/", 1)[1]
    collab_hub.wait_ready(OWNER, name)
    yield name
    collab_hub.delete_server(OWNER, name)


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def login(browser, hub: Hub, name: str):
    return demo_login(browser, hub.url, name, 1280, 800, TIMEOUT)


def authorize_if_asked(page) -> None:
    """The hub asks a member once to let the shared instance identify them."""
    page.wait_for_load_state()
    if "/hub/api/oauth2/authorize" in page.url:
        page.click("form button[type=submit]")


def open_desktop(page, hub: Hub, server: str) -> None:
    page.goto(f"{hub.url}/user/{OWNER}/{server}/visa/desktop")
    authorize_if_asked(page)
    page.wait_for_function("window.visaDesktop && window.visaDesktop.state === 'connected'")
    page.wait_for_function(f"({CANVAS_COLOURS})() >= 3")


def desktop_state(page) -> dict:
    return json.loads(page.evaluate("JSON.stringify({...window.visaDesktop, rfb: null})"))


def marker() -> str:
    return "".join(random.choice(string.ascii_lowercase) for _ in range(10))


def type_in_desktop(page, command: str) -> None:
    page.evaluate("window.visaDesktop.rfb.focus()")
    page.keyboard.type("cd")
    page.keyboard.press("Enter")
    page.keyboard.type(command)
    page.keyboard.press("Enter")


def home_file(person, server: str, name: str) -> bool:
    path = f"api/contents/home/{account(OWNER, server)}/{name}"
    return person(OWNER).instance_call("GET", OWNER, server, path).status_code == 200


def owner_types_until(page, person, server: str, name: str) -> None:
    for attempt in range(3):  # a freshly started desktop may lose its very first keystrokes
        type_in_desktop(page, f"touch {name}")
        try:
            wait_for(lambda: home_file(person, server, name), 15, f"{name} typed by the owner")
            return
        except TimeoutError:
            if attempt == 2:
                raise


def test_access_request_round_trip(collab_hub: Hub, person, server: str, browser, artifacts) -> None:
    """erin asks to join while alice works on the desktop; alice grants read-only from the prompt
    over her desktop; erin lands on the desktop, view-only. dave asks; alice rejects; dave stays out."""
    owner = login(browser, collab_hub, OWNER)
    open_desktop(owner, collab_hub, server)
    wait_for(lambda: person(OWNER).collab("GET", f"instances/{OWNER}/{server}").json()["presence"], 20,
             "alice's presence reported")
    # her desktop page loads the (hidden) prompt, whose polls tell the service she is here
    wait_for(lambda: next(i for i in person("erin").collab("GET", "support-instances").json()
                          if i["server"] == server)["owner_connected"], 20, "alice's page polling the service")

    erin = login(browser, collab_hub, "erin")
    erin.goto(f"{collab_hub.url}/services/visa-collab/")
    row = erin.locator(f'#visa-support tr[data-server="{server}"]')
    erin.screenshot(path=str(artifacts / "collab-request-0-support-list.png"))
    row.locator("button.visa-open").click()
    erin.wait_for_url("**/services/visa-collab/requests/**")
    assert erin.locator("#visa-request-status").get_attribute("data-status") == "pending"
    erin.screenshot(path=str(artifacts / "collab-request-1-waiting.png"))

    prompt = owner.frame_locator("#visa-prompt")
    owner.locator("#visa-prompt").wait_for(state="visible")
    prompt.locator('.visa-request button[data-decision="read-only"]').wait_for()
    owner.screenshot(path=str(artifacts / "collab-request-2-prompt.png"))
    prompt.locator('.visa-request button[data-decision="read-only"]').click()
    owner.locator("#visa-prompt").wait_for(state="hidden")

    # the answer within seconds: to the desktop (through the hub's one-time "Authorize" page)
    erin.wait_for_url(lambda url: f"/user/{OWNER}/{server}/" in url or "/oauth2/authorize" in url, timeout=15_000)
    authorize_if_asked(erin)
    erin.wait_for_function("window.visaDesktop && window.visaDesktop.state === 'connected'")
    erin.wait_for_function("window.visaDesktop.room && window.visaDesktop.room.role === 'guest'")
    state = desktop_state(erin)
    assert state["viewOnly"] is True
    assert "view only" in erin.text_content("#visa-state-text")
    erin.screenshot(path=str(artifacts / "collab-request-3-granted-read-only.png"))

    dave = login(browser, collab_hub, "dave")
    dave.goto(f"{collab_hub.url}/services/visa-collab/")
    dave.locator(f'#visa-support tr[data-server="{server}"] button.visa-open').click()
    dave.wait_for_url("**/services/visa-collab/requests/**")
    prompt.locator('.visa-request button[data-decision="reject"]').click()
    dave.wait_for_function("document.querySelector('#visa-request-status').dataset.status === 'rejected'",
                           timeout=15_000)
    assert "declined" in dave.text_content("#visa-request-status")
    dave.screenshot(path=str(artifacts / "collab-request-4-rejected.png"))
    r = person("dave").open_instance(OWNER, server, "visa/desktop")
    assert r.status_code == 403
    # the owner's Members page: erin is a guest, granted by alice on request; the log says so
    owner.goto(f"{collab_hub.url}/services/visa-collab/instances/{OWNER}/{server}")
    owner.locator('#visa-members tr[data-member="erin"]').wait_for()
    assert owner.locator('#visa-members tr[data-member="erin"] select').input_value() == "guest"
    assert "decide-request" in owner.locator("#visa-audit").inner_text()
    owner.screenshot(path=str(artifacts / "collab-members-page.png"), full_page=True)
    for page in (owner, erin, dave):
        page.context.close()


def test_owner_and_guest_on_the_same_desktop(collab_hub: Hub, person, server: str, browser, artifacts) -> None:
    """erin (guest since the previous test) types on her desktop page with noVNC's view-only
    switched off by hand: the server drops it. alice's typing shows on both screens."""
    owner = login(browser, collab_hub, OWNER)
    guest = login(browser, collab_hub, "erin")
    open_desktop(owner, collab_hub, server)
    owner_types_until(owner, person, server, f"warmup{marker()}")
    open_desktop(guest, collab_hub, server)
    assert desktop_state(guest)["viewOnly"] is True

    guest.evaluate("window.visaDesktop.rfb.viewOnly = false")  # a page that lies to the server
    guest_file = f"guest{marker()}"
    before = guest.evaluate("document.querySelector('#visa-screen canvas').toDataURL()")
    type_in_desktop(guest, f"touch {guest_file}")
    guest.mouse.click(400, 300)
    owner_file = f"owner{marker()}"
    owner_types_until(owner, person, server, owner_file)
    guest.wait_for_function(f"document.querySelector('#visa-screen canvas').toDataURL() !== {json.dumps(before)}")
    assert not home_file(person, server, guest_file)
    owner.screenshot(path=str(artifacts / "collab-desktop-owner.png"))
    guest.screenshot(path=str(artifacts / "collab-desktop-guest.png"))
    # the owner's status bar names who is watching
    owner.wait_for_function("document.querySelector('#visa-people').textContent.includes('erin')")
    for page in (owner, guest):
        page.context.close()


def test_two_users_edit_one_notebook(collab_hub: Hub, person, server: str, browser, artifacts) -> None:
    alice = person(OWNER)
    r = alice.collab("POST", f"instances/{OWNER}/{server}/members", {"member": "bob", "role": "user"})
    assert r.status_code == 201, r.text
    path = f"home/{account(OWNER, server)}/shared.ipynb"
    notebook = {"cells": [{"cell_type": "code", "source": "", "metadata": {}, "outputs": [], "execution_count": None,
                           "id": "first"}],
                "metadata": {"kernelspec": {"name": "data-analysis", "display_name": "Data analysis", "language": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    r = alice.instance_call("PUT", OWNER, server, f"api/contents/{path}",
                            json={"type": "notebook", "format": "json", "content": notebook})
    assert r.status_code in (200, 201), r.text

    pages = {}
    for name in (OWNER, "bob"):
        page = login(browser, collab_hub, name)
        page.goto(f"{collab_hub.url}/user/{OWNER}/{server}/lab/tree/{path}")
        authorize_if_asked(page)
        page.locator(".jp-Notebook .jp-Cell .cm-content").first.wait_for(timeout=120_000)
        pages[name] = page
        dialog = page.locator(".jp-Dialog")
        if dialog.count():
            page.screenshot(path=str(artifacts / f"collab-coedit-dialog-{name}.png"))
            raise AssertionError(f"JupyterLab shows a dialog to {name}: {dialog.first.inner_text()[:300]}")

    def cell_text(page) -> str:
        return page.locator(".jp-Notebook .jp-Cell .cm-content").first.inner_text()

    pages[OWNER].locator(".jp-Notebook .jp-Cell .cm-content").first.click()
    pages[OWNER].keyboard.type("x = 'alice was here'")
    pages["bob"].wait_for_function(
        "document.querySelector('.jp-Notebook .jp-Cell .cm-content').innerText.includes('alice was here')",
        timeout=30_000)
    pages["bob"].locator(".jp-Notebook .jp-Cell .cm-content").first.click()
    pages["bob"].keyboard.press("End")
    pages["bob"].keyboard.type("  # and bob")
    pages[OWNER].wait_for_function(
        "document.querySelector('.jp-Notebook .jp-Cell .cm-content').innerText.includes('and bob')",
        timeout=30_000)
    assert "alice was here" in cell_text(pages["bob"]) and "and bob" in cell_text(pages[OWNER])
    pages[OWNER].screenshot(path=str(artifacts / "collab-coedit-alice.png"))
    pages["bob"].screenshot(path=str(artifacts / "collab-coedit-bob.png"))
    for page in pages.values():
        page.context.close()
