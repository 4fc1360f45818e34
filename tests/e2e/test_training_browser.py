"""Issue 19 as a trainer and participants meet it, in one Chromium (a context per person), on the
session's demo hub and its visa-training service: tina creates a course on the page and starts the
class; frank and paul open their course instance from the home page, a guest joins by a seat link;
each sees the materials in Lab and opens the desktop; tina's grid shows three live desktops; she
helps frank (her typing reaches his desktop, his page says so), watches paul (her input is dropped)
and broadcasts a message that reaches all three. (Pool adoption isolation: tests/training/test_pool.py.)"""
from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.browser import CANVAS_COLOURS, chromium, demo_login
from tests.collab.test_browser_collab import authorize_if_asked, type_in_desktop
from tests.hubtools import Browserless, Hub
from tests.spawner.sandbox.sandbox_probe import account
from tests.support import wait_for

pytestmark = [pytest.mark.root, pytest.mark.browser]

PREFIX = "/services/visa-training/"
MATERIALS = "python-neutron"  # the demo course's folder of the materials root
NOTEBOOK = "exercise-1.ipynb"
TIMEOUT = 120_000


def home_file(person: Browserless, owner: str, server: str, name: str) -> bool:
    """Whether the instance's home has the file (its Jupyter contents API, as the owner)."""
    r = person.instance_api("GET", owner, server, f"api/contents/home/{account(owner, server)}/{name}")
    assert r.status_code in (200, 404), r.text[:300]
    return r.status_code == 200


def type_in_terminal(page, command: str) -> None:
    """Click in the terminal the desktop opens at its top left (72x22+40+40; the file manager, at
    the right, may have the focus), then type the command there."""
    box = page.locator("#visa-screen canvas").bounding_box()
    scale = box["width"] / page.evaluate("document.querySelector('#visa-screen canvas').width")
    page.mouse.click(box["x"] + 150 * scale, box["y"] + 250 * scale)
    type_in_desktop(page, command)


def types_until(page, person: Browserless, owner: str, server: str, name: str) -> None:
    """Type `touch <name>` in the desktop's terminal until the file is there (a freshly started
    desktop may lose its very first keystrokes)."""
    for attempt in range(3):
        type_in_terminal(page, f"touch {name}")
        try:
            wait_for(lambda: home_file(person, owner, server, name), 15, f"{name} typed on {owner}'s desktop")
            return
        except TimeoutError:
            if attempt == 2:
                raise


def open_desktop(page, url: str) -> None:
    page.goto(url)
    desktop_shows(page)


def desktop_shows(page) -> None:
    authorize_if_asked(page)  # someone else's instance: the hub asks once
    page.wait_for_function("window.visaDesktop && window.visaDesktop.state === 'connected'")
    page.wait_for_function(f"({CANVAS_COLOURS})() >= 3")


def create_course(tina, hub: Hub, course: str) -> None:
    """The "New course" form of the service's page, as a trainer fills it."""
    tina.goto(f"{hub.url}{PREFIX}")
    authorize_if_asked(tina)
    form = tina.locator("#visa-new-course")
    today = datetime.now(UTC).date()
    form.locator("input[name=id]").fill(course)
    form.locator("input[name=title]").fill(f"Neutron data <{course}>")
    form.locator("input[name=start]").fill(today.isoformat())
    form.locator("input[name=end]").fill((today + timedelta(days=1)).isoformat())
    form.locator("select[name=plan]").select_option("sandbox-small")
    form.locator("input[name=proposal]").fill("P-2021-007")
    form.locator("select[name=materials]").select_option(MATERIALS)
    form.locator("input[name=guest_seats]").fill("1")
    form.locator("textarea[name=participants]").fill("frank\npaul")
    form.locator("button[type=submit]").click()
    report = tina.locator("#visa-create-report")
    report.filter(has_text="line 2: added paul").wait_for()
    assert "line 1: added frank" in report.inner_text()
    tina.wait_for_url(f"**{PREFIX}courses/{course}")


def drain_pool(hub: Hub, name: str) -> None:
    """The course's warm pool ends (its job is done once the guest adopted one): an admin's call."""
    admin = Browserless(hub, "admin", "admin-demo")
    admin.home()
    xsrf = next(c.value for c in admin.s.cookies if c.name == "_xsrf" and c.path.startswith("/hub"))
    r = admin.s.delete(f"{hub.url}/hub/api/visa/pools/{name}", headers={"X-XSRFToken": xsrf}, timeout=60)
    assert r.status_code in (204, 404), r.text


def test_a_trainer_runs_a_class_in_the_browser(hub: Hub, artifacts) -> None:
    course = f"e2e-{uuid.uuid4().hex[:6]}"
    try:
        with chromium() as browser:
            try:
                run_the_class(browser, hub, course, artifacts)
            except Exception:  # what each person saw, for the report
                for i, page in enumerate(p for context in browser.contexts for p in context.pages):
                    page.screenshot(path=str(artifacts / f"training-failed-{i}.png"))
                raise
    finally:
        drain_pool(hub, course)
        for user in hub.api("GET", "/users").json():  # the seat's guest account (the hub's, not the catalogue's)
            if user["name"].startswith(f"{course}-guest"):
                for name in user.get("servers", {}):
                    hub.delete_server(user["name"], name)
                hub.api("DELETE", f"/users/{user['name']}")


def run_the_class(browser, hub: Hub, course: str, artifacts) -> None:
    server = f"course-{course}"
    # 1. tina creates the course on the page and starts the class
    tina = demo_login(browser, hub.url, "tina", timeout=TIMEOUT)
    tina.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=hub.url)
    create_course(tina, hub, course)
    tina.locator("#visa-start").click()
    for user in ("frank", "paul"):
        state = tina.locator(f'#visa-participants tr[data-user="{user}"] .visa-state')
        state.filter(has_text="ready").wait_for(timeout=240_000)
    assert "Warm pool of 3" in tina.locator("#visa-start-note").inner_text()  # 1 free seat + 2 spare
    tina.locator("#visa-seats tbody tr button", has_text="Copy").first.click()
    seat_link = tina.evaluate("navigator.clipboard.readText()")
    assert seat_link.startswith(f"{hub.url}/hub/visa/seat/"), seat_link
    tina.screenshot(path=str(artifacts / "training-course.png"), full_page=True)

    # 2. frank and paul open their course instance from the home page; a guest joins by the seat link
    people, desktops = {}, {}
    for user in ("frank", "paul"):
        page = demo_login(browser, hub.url, user, timeout=TIMEOUT)
        row = page.locator(f'tr.visa-instance[data-server-name="{server}"]')
        assert "Neutron data" in row.locator(".visa-name").inner_text()
        row.locator(".visa-open-lab").click()
        people[user] = page
    joining = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    joining.set_default_timeout(TIMEOUT)
    joining.goto(seat_link)
    joining.locator("#visa-seat-join button").click()
    joining.wait_for_url(re.compile(rf"/user/{course}-guest\d+/{server}/lab"), wait_until="commit")
    guest = joining.url.split("/user/")[1].split("/")[0]
    people[guest] = joining
    drain_pool(hub, course)
    for user, page in people.items():
        page.locator(".jp-DirListing-itemText", has_text=NOTEBOOK).wait_for()
        page.locator(".jp-DirListing-itemText", has_text="README.md").wait_for()
        page.goto(f"{hub.url}/user/{user}/{server}/visa/desktop", wait_until="commit")
        desktops[user] = page
    for page in desktops.values():  # the three desktops start together
        desktop_shows(page)

    # 3. the grid: three tiles, each with a live thumbnail
    tina.goto(f"{hub.url}{PREFIX}courses/{course}/grid")
    tina.wait_for_function("""() => {
        const imgs = [...document.querySelectorAll('#visa-grid .visa-tile img')];
        return imgs.length === 3 && imgs.every((img) => !img.hidden && img.complete && img.naturalWidth > 0);
    }""", timeout=60_000)
    assert {t.get_attribute("data-user") for t in tina.locator(".visa-tile").all()} == {"frank", "paul", guest}
    tina.screenshot(path=str(artifacts / "training-grid.png"), full_page=True)
    # the guest joined after "Start the class": the grid shared their instance with tina (a member now)
    as_guest_member = tina.evaluate("""(path) => window.visaTraining.api('POST', path, {on: false})
        .then((r) => r.role, (e) => e.message)""", f"courses/{course}/grid/{guest}/help")
    assert as_guest_member == "guest", as_guest_member

    # 4. Help frank: SUPPORT on his desktop, her typing reaches it, his page says she is helping
    frank, paul = Browserless(hub, "frank", "frank-demo"), Browserless(hub, "paul", "paul-demo")
    with tina.context.expect_page() as opened:
        tina.locator('.visa-tile[data-user="frank"] button', has_text="Help").click()
    helping = opened.value
    helping.set_default_timeout(TIMEOUT)
    open_desktop(helping, f"{hub.url}/user/frank/{server}/visa/desktop")
    helping.wait_for_function("window.visaDesktop.room && window.visaDesktop.room.role === 'support'")
    assert helping.evaluate("window.visaDesktop.viewOnly") is False
    types_until(helping, frank, "frank", server, f"helped{uuid.uuid4().hex[:8]}")
    desktops["frank"].locator("#visa-course-helping", has_text="tina is helping you").wait_for(timeout=30_000)
    helping.screenshot(path=str(artifacts / "training-help.png"))

    # ... and Watch paul: view only; input forced through by the page is dropped by the server
    with tina.context.expect_page() as opened:
        tina.locator('.visa-tile[data-user="paul"] a', has_text="Watch").click()
    watching = opened.value
    watching.set_default_timeout(TIMEOUT)
    authorize_if_asked(watching)
    watching.wait_for_function("window.visaDesktop && window.visaDesktop.state === 'connected'")
    watching.wait_for_function("window.visaDesktop.room && window.visaDesktop.room.role === 'guest'")
    assert watching.evaluate("window.visaDesktop.viewOnly") is True
    watching.evaluate("window.visaDesktop.rfb.viewOnly = false")  # a page that lies to the server
    dropped = f"watched{uuid.uuid4().hex[:8]}"
    type_in_terminal(watching, f"touch {dropped}")
    types_until(desktops["paul"], paul, "paul", server, f"own{uuid.uuid4().hex[:8]}")  # typed after hers
    assert not home_file(paul, "paul", server, dropped)

    # 5. a broadcast reaches the three participants' desktop pages
    text = f"Open {NOTEBOOK} now <{uuid.uuid4().hex[:4]}>"
    tina.fill("#visa-broadcast", text)
    tina.locator("#visa-broadcast-form button[type=submit]").click()
    tina.locator("#visa-broadcast-note", has_text="Sent at").wait_for()
    for page in desktops.values():
        page.locator("#visa-course-message", has_text=f"tina: {text}").wait_for(timeout=30_000)
    desktops[guest].screenshot(path=str(artifacts / "training-broadcast-guest.png"))
    tina.locator("#visa-broadcast-clear").click()
    tina.locator("#visa-broadcast-note", has_text="Cleared").wait_for()
