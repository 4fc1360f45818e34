"""The session's demo hub and its visa-training service (the demo course, three guest seats): a seat
link makes a guest once, signs it in and starts its course instance with the materials; the guest
downloads their work, nobody else's, and signs in again from another browser with the personal
link of its home page (only with its own token); a non-participant's course instance is refused.

(A participant's instance started by "Start the class" is tested in test_hub_training.py.)"""
from __future__ import annotations

import io
import re
import tarfile

import pytest
import requests

from tests.hubtools import Hub
from visa_spawner.backends.sandbox.command import account_name

pytestmark = pytest.mark.root
COURSE, SERVER = "python-neutron", "course-python-neutron"
PREFIX = "/services/visa-training/"


def xsrf_of(html: str) -> str:
    m = re.search(r'name="_xsrf" value="([^"]+)"', html)
    assert m, html[:500]
    return m.group(1)


def free_seat(hub: Hub, tina) -> str:
    """A free seat link of the demo course, as its trainer's page lists them."""
    detail = tina.s.get(f"{hub.url}{PREFIX}api/courses/{COURSE}", timeout=30)
    assert detail.status_code == 200, detail.text[:300]
    links = [s["link"] for s in detail.json()["seats"] if s["state"] == "free"]
    assert links, "the demo course has no free seat left"
    return hub.url + links[0] if links[0].startswith("/") else links[0]


def test_a_seat_link_makes_a_guest_once_who_downloads_their_work(hub, hub_state, login):
    url = free_seat(hub, login("tina"))
    s = requests.Session()
    page = s.get(url, timeout=10)
    assert page.status_code == 200 and 'id="visa-seat-join"' in page.text
    assert s.post(url, timeout=10, allow_redirects=False).status_code == 403  # no XSRF token: refused
    r = s.post(url, data={"_xsrf": xsrf_of(page.text)}, timeout=30, allow_redirects=False)
    assert r.status_code == 302, r.text[:500]
    guest, server = r.headers["location"].split("/")[-2:]
    assert server == SERVER and r.headers["location"].endswith(f"/hub/spawn-pending/{guest}/{SERVER}")
    model = hub.wait_ready(guest, SERVER, timeout=120)
    assert (model["user_options"]["plan"], model["user_options"]["proposal"]) == ("sandbox-small", "P-2021-007")
    home_dir = hub_state / "sandbox" / "homes" / account_name(guest, SERVER)
    assert {"README.md", "exercise-1.ipynb"} <= {p.name for p in home_dir.iterdir()}
    assert f"course:{COURSE}" in hub.api("GET", f"/users/{guest}").json()["groups"]
    home = s.get(f"{hub.url}/hub/home", timeout=10)
    assert home.status_code == 200 and "Python for neutron data" in home.text
    assert 'id="visa-pending"' not in home.text and f"visa/course-work/{guest}/{SERVER}" in home.text

    # the same link again, from another browser: a clear page, no new account
    other = requests.Session()
    again = other.post(url, data={"_xsrf": xsrf_of(other.get(url, timeout=10).text)}, timeout=10,
                       allow_redirects=False)
    assert again.status_code == 410 and "already used" in again.text
    unknown = other.post(f"{hub.url}/hub/visa/seat/no-such-seat", data={"_xsrf": xsrf_of(other.get(url, timeout=10).text)},
                         timeout=10, allow_redirects=False)
    assert unknown.status_code == 404 and "not known" in unknown.text
    assert other.get(f"{hub.url}/hub/visa/seat/not%20a%20token", timeout=10).status_code == 404

    # no password: the home page's personal link signs the guest in again from another browser
    (link,) = re.findall(r'href="(/hub/visa/seat-return/[^"]+)"', home.text)
    assert link.startswith(f"/hub/visa/seat-return/{guest}/")
    back = requests.Session()
    form = back.get(hub.url + link, timeout=10)
    assert form.status_code == 200 and 'id="visa-seat-return"' in form.text and back.get(
        f"{hub.url}/hub/api/user", timeout=10).status_code in (401, 403)  # the GET signed nobody in
    r = back.post(hub.url + link, data={"_xsrf": xsrf_of(form.text)}, timeout=10, allow_redirects=False)
    assert r.status_code == 302 and r.headers["location"].endswith("/hub/home"), r.text[:300]
    assert back.get(f"{hub.url}/hub/api/user", timeout=10).json()["name"] == guest
    # another token, another account's name, a facility account: a clear page, nobody signed in
    token = link.rsplit("/", 1)[1]
    for wrong in (f"{guest}/{token[:-1]}x", f"frank/{token}", f"no-such-user/{token}"):
        stranger = requests.Session()
        form = stranger.get(f"{hub.url}/hub/visa/seat-return/{wrong}", timeout=10)
        r = stranger.post(f"{hub.url}/hub/visa/seat-return/{wrong}", data={"_xsrf": xsrf_of(form.text)},
                          timeout=10, allow_redirects=False)
        assert r.status_code == 404 and "not valid" in r.text, (wrong, r.status_code)
        assert stranger.get(f"{hub.url}/hub/api/user", timeout=10).status_code in (401, 403)
    assert login("frank").s.get(f"{hub.url}/hub/home", timeout=10).text.count("seat-return") == 0

    # "Download my work": the guest's own home as a tar.gz; nobody else's
    work = s.get(f"{hub.url}/hub/visa/course-work/{guest}/{SERVER}", timeout=60)
    assert work.status_code == 200 and work.headers["Content-Type"] == "application/gzip", work.text[:300]
    with tarfile.open(fileobj=io.BytesIO(work.content)) as tar:
        assert tar.extractfile("./README.md").read()
    assert s.get(f"{hub.url}/hub/visa/course-work/frank/{SERVER}", timeout=10).status_code == 403
    assert login("frank").s.get(f"{hub.url}/hub/visa/course-work/{guest}/{SERVER}", timeout=10).status_code == 403


def test_a_non_participant_course_instance_is_refused(hub):
    assert hub.api("POST", "/users/bob").status_code in (201, 409)
    r = hub.api("POST", f"/users/bob/servers/{SERVER}", json={"course": COURSE})
    assert r.status_code == 403 and "not a participant of the course python-neutron" in r.json()["message"], r.text
