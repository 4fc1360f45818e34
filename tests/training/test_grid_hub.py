"""The trainer's grid on the session's demo hub (sandbox backend, visa-training with the demo course,
visa-collab): who may see it, a live thumbnail, a broadcast reaching a participant's pages, Help,
and Reset leaving only the materials."""
from __future__ import annotations

import json
import re
import struct
import uuid

import pytest
import requests

from tests.collab.helpers import Person
from tests.hubtools import Hub
from tests.rfb import RfbClient
from tests.spawner.sandbox.sandbox_probe import account
from tests.support import wait_for

pytestmark = pytest.mark.root

PREFIX = "/services/visa-training/"
COURSE = "python-neutron"  # the demo course: trainer tina, participants frank, paul, quinn
SERVER = f"course-{COURSE}"


class Trainer(Person):
    """A person using the training service's pages and API (XSRF from the page, as its script does)."""

    xsrf = ""

    def page(self, path: str):
        r = self.s.get(f"{self.hub.url}{PREFIX}{path}", timeout=30)
        if r.status_code == 200:
            self.xsrf = json.loads(re.search(r"xsrf: (\"[^\"]*\")", r.text).group(1))
        return r

    def api(self, method: str, path: str, body: dict | None = None):
        return self.s.request(method, f"{self.hub.url}{PREFIX}api/{path}", json=body, timeout=120,
                              headers={"X-XSRFToken": self.xsrf})


def no_cors_get(person: Person, url: str):
    """What broadcast.js does: a same-origin no-cors GET (JupyterHub needs no XSRF token for it)."""
    return person.s.get(url, timeout=30, headers={"Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Site": "same-origin",
                                                  "Accept": "application/json"})


def home_names(frank: Person) -> set[str]:
    path = f"api/contents/home/{account('frank', SERVER)}"
    r = frank.instance_call("GET", "frank", SERVER, path)
    if r.status_code in (302, 403):  # a restarted instance: log in to it again
        frank.open_instance("frank", SERVER, "visa/desktop")
        r = frank.instance_call("GET", "frank", SERVER, path)
    assert r.status_code == 200, r.text[:300]
    return {item["name"] for item in r.json()["content"]}


def test_the_grid(hub: Hub) -> None:
    tina, dave, frank = Trainer(hub, "tina"), Trainer(hub, "dave"), Person(hub, "frank")
    assert tina.page(f"courses/{COURSE}/grid").status_code == 200
    # dave (STAFF) trains a course of his own: tina's grid is not hers (403 on the page and the API)
    assert dave.page("").status_code == 200
    other = f"grid-{uuid.uuid4().hex[:8]}"
    r = dave.api("POST", "courses", {"id": other, "title": "Dave's course", "start": "today", "end": "today+1",
                                     "plan": "sandbox-small"})
    assert r.status_code == 201, r.text
    assert dave.page(f"courses/{other}/grid").status_code == 200
    for person in (dave, frank):  # another course's trainer, and a participant
        r = person.s.get(f"{hub.url}{PREFIX}courses/{COURSE}/grid", timeout=30)
        assert r.status_code == 403 and "Python for neutron data" in r.text
        r = person.s.get(f"{hub.url}{PREFIX}api/courses/{COURSE}/grid", timeout=30,
                         headers={"Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Site": "same-origin"})
        assert r.status_code == 403 and "tiles" not in r.text
    assert dave.api("POST", f"courses/{COURSE}/broadcast", {"text": "not my course"}).status_code == 403
    r = tina.api("POST", f"courses/{COURSE}/broadcast", {"text": "Break", "minutes": 0})
    assert r.status_code == 400 and "minutes must be a whole number" in r.text, r.text
    r = tina.api("POST", f"courses/{COURSE}/broadcast", {"text": "Break", "minutes": 10})
    assert r.status_code == 200 and r.json()["broadcast"]["expires_at"] > r.json()["broadcast"]["at"], r.text

    # frank's course instance (as "Start the class" makes it), shared with tina as GUEST
    r = hub.api("POST", f"/users/frank/servers/{SERVER}", json={"course": COURSE})
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("frank", SERVER, timeout=180)
    r = frank.collab("POST", f"instances/frank/{SERVER}/members", {"member": "tina", "role": "guest"})
    assert r.status_code == 201, r.text
    first_home = home_names(frank)
    assert {"README.md", "exercise-1.ipynb"} <= first_home

    tiles = {t["user"]: t for t in tina.api("GET", f"courses/{COURSE}/grid").json()["tiles"]}
    assert {"frank", "paul", "quinn"} <= tiles.keys()
    tile = tiles["frank"]
    assert tile["state"] == "running"
    assert tile["desktop_url"] == f"/user/frank/{SERVER}/visa/desktop"
    snapshot = f"{hub.url}{tile['snapshot_url']}?w=320"
    r = tina.s.get(snapshot, timeout=30)
    assert r.status_code == 404 and "not started" in r.text  # nobody opened the desktop yet
    assert dave.s.get(snapshot, timeout=30).status_code == 403

    # frank opens his desktop: tina's grid shows it
    frank.open_instance("frank", SERVER, "visa/desktop")
    desktop = RfbClient(frank.websocket("frank", SERVER, "desktop/"))
    try:
        desktop.screen()
        r = tina.s.get(snapshot, timeout=30)
        assert r.status_code == 200 and r.headers["Content-Type"] == "image/png", r.text[:300]
        width, height = struct.unpack(">II", r.content[16:24])
        assert width == 320 and height == round(320 * desktop.height / desktop.width)
        present = wait_for(lambda: next(t for t in tina.api("GET", f"courses/{COURSE}/grid").json()["tiles"]
                                        if t["user"] == "frank")["present"], 30, "frank present on his tile")
        assert any(p["user"] == "frank" and p["channel"] == "desktop" for p in present)

        # a broadcast: on frank's Lab page (the script) and from the service as his page reads it
        r = tina.api("POST", f"courses/{COURSE}/broadcast", {"text": "Open <exercise> 1 now"})
        assert r.status_code == 200 and r.json()["broadcast"]["text"] == "Open <exercise> 1 now"
        lab = frank.open_instance("frank", SERVER, "lab")
        tag = re.search(r'<script src="[^"]*visa/static/broadcast\.js" data-broadcast="([^"]+)"', lab.text)
        assert tag, lab.text[-500:]
        message = no_cors_get(frank, f"{hub.url}{tag.group(1)}")
        assert message.status_code == 200, message.text[:300]
        assert message.json()["broadcast"]["text"] == "Open <exercise> 1 now"
        assert message.json()["broadcast"]["from"] == "tina"
        assert no_cors_get(dave, f"{hub.url}{tag.group(1)}").status_code == 403

        # Help: tina becomes SUPPORT on frank's instance (through visa-collab), then GUEST again
        r = tina.api("POST", f"courses/{COURSE}/grid/frank/help", {"on": True})
        assert r.status_code == 200 and r.json()["role"] == "support", r.text
        members = frank.collab("GET", f"instances/frank/{SERVER}").json()["members"]
        assert {m["member"]: m["role"] for m in members} == {"tina": "support"}, members
        # on the desktop as SUPPORT, she shows in frank's room: his pages' banner says she is helping
        tina.open_instance("frank", SERVER, "visa/desktop")  # the hub's consent page, once
        helper = RfbClient(tina.websocket("frank", SERVER, "desktop/"))
        try:
            helper.screen()
            room = no_cors_get(frank, f"{hub.url}/user/frank/{SERVER}/visa/api/room").json()
            assert {"user": "tina", "role": "support"}.items() <= next(
                p for p in room["present"] if p["user"] == "tina").items(), room
        finally:
            helper.close()
        assert tina.api("POST", f"courses/{COURSE}/grid/frank/help", {"on": "yes"}).status_code == 400
        assert tina.api("POST", f"courses/{COURSE}/grid/frank/help", {"on": False}).json()["role"] == "guest"
    finally:
        desktop.close()

    # Reset: frank's own file goes, the materials come back
    r = frank.instance_call("PUT", "frank", SERVER, f"api/contents/home/{account('frank', SERVER)}/mine.txt",
                            json={"type": "file", "format": "text", "content": "my work"})
    assert r.status_code == 201, r.text[:300]
    assert "mine.txt" in home_names(frank)
    assert dave.api("POST", f"courses/{COURSE}/grid/frank/reset").status_code == 403
    frank.home()  # the hub's _xsrf cookie: frank makes himself a token as the token page does
    xsrf = next(c.value for c in frank.s.cookies if c.name == "_xsrf" and c.path.startswith("/hub"))
    r = frank.s.post(f"{hub.url}/hub/api/users/frank/tokens", json={"expires_in": 300}, timeout=30,
                     headers={"X-XSRFToken": xsrf})
    assert r.status_code == 201, r.text
    own = r.json()["token"]
    r = requests.post(f"{hub.url}/hub/api/visa/instances/frank/{SERVER}/reset", timeout=30,
                      headers={"Authorization": f"token {own}"})
    assert r.status_code == 403, r.text  # not an owner's own action: admins and the service only
    r = tina.api("POST", f"courses/{COURSE}/grid/frank/reset")
    assert r.status_code == 200, r.text
    hub.wait_ready("frank", SERVER, timeout=120)
    assert home_names(frank) == first_home
    assert tina.api("POST", f"courses/{COURSE}/broadcast", {"text": ""}).json() == {"broadcast": None}
