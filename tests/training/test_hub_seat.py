"""A real hub (sandboxes) with a stand-in of visa-training's internal API: a participant's course
instance starts with the materials in its home; a seat link makes a guest, signs it in, starts its
instance, and cannot be used twice; the guest downloads their work, nobody else's."""
from __future__ import annotations

import asyncio
import io
import os
import re
import shutil
import tarfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from tornado import web
from tornado.httpserver import HTTPServer

from tests.hubtools import TEST_CONFIG, Hub, demo_state
from tests.support import free_port
from visa_spawner.backends.sandbox.command import account_name

pytestmark = pytest.mark.root
COURSE, SERVER, TOKEN, SEAT = "python-neutron", "course-python-neutron", "internal-test-secret", "seat-0123456789ab"
GUEST = "guest-python-neutron-1"


class FakeTraining:
    """The internal API of the contract, in a thread: participants, and one seat that makes GUEST."""

    def __init__(self, materials: Path) -> None:
        now = datetime.now(UTC)
        self.course = {"course": COURSE, "title": "Python for neutron data", "plan": "sandbox-small",
                       "proposal": "P-2021-007", "materials": str(materials),
                       "starts_at": (now - timedelta(days=1)).isoformat(), "ends_at": (now + timedelta(days=1)).isoformat(),
                       "download_until": (now + timedelta(days=8)).isoformat(), "started": True, "warm_pool": False}
        self.participants, self.seat_used, self.lock = {"frank"}, False, threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/services/visa-training/api/internal/"
        self.ready = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()
        assert self.ready.wait(10)

    def _serve(self) -> None:
        fake = self

        class Internal(web.RequestHandler):
            def prepare(self) -> None:
                if self.request.headers.get("Authorization") != f"token {TOKEN}":
                    raise web.HTTPError(403)

        class Participant(Internal):
            def get(self, course: str, user: str) -> None:
                if course != COURSE or user not in fake.participants:
                    self.set_status(404)
                    self.finish({"error": "not a participant"})
                    return
                self.finish(fake.course)

        class Redeem(Internal):
            def post(self, token: str) -> None:
                with fake.lock:
                    if token != SEAT:
                        self.set_status(404)
                        self.finish({"error": "This sign-up link is not known."})
                        return
                    if fake.seat_used:
                        self.set_status(410)
                        self.finish({"error": "This sign-up link was already used."})
                        return
                    fake.seat_used = True
                    fake.participants.add(GUEST)
                self.finish({"user": GUEST, "display_name": "Guest 1", "course": COURSE,
                             "expires": fake.course["ends_at"][:10], "proposal": "P-2021-007"})

        asyncio.set_event_loop(asyncio.new_event_loop())
        prefix = "/services/visa-training/api/internal/"
        HTTPServer(web.Application([(prefix + r"courses/([^/]+)/participants/([^/]+)", Participant),
                                    (prefix + r"seats/([^/]+)/redeem", Redeem)])).listen(self.port, "127.0.0.1")
        self.ready.set()
        asyncio.get_event_loop().run_forever()


@pytest.fixture(scope="module")
def course_hub() -> Iterator[tuple[Hub, FakeTraining]]:
    for state in demo_state():
        materials = state / "materials"
        (materials / "data").mkdir(parents=True)
        (materials / "README.md").write_text("# Python for neutron data\n")
        (materials / "data" / "notes.txt").write_text("read me")
        (materials / "escape").symlink_to("/etc")
        fake = FakeTraining(materials)
        config = state / "course_test_config.py"
        config.write_text(
            "import os\n"
            f"load_subconfig({str(TEST_CONFIG)!r})\n"
            "c = get_config()\n"
            "c.VisaSpawner.training_api_url = os.environ['VISA_TEST_TRAINING_API']\n"
            f"c.VisaSpawner.training_api_token = {TOKEN!r}\n")
        hub = Hub(state, config=config, extra_env={"VISA_TEST_TRAINING_API": fake.url}).start()
        try:
            yield hub, fake
        finally:
            try:
                hub.stop_all_servers()
            finally:
                hub.stop()
                for owner in ("frank", GUEST):
                    shutil.rmtree(state / "sandbox" / "homes" / account_name(owner, SERVER), ignore_errors=True)


def home_of(hub: Hub, owner: str) -> Path:
    return hub.state / "sandbox" / "homes" / account_name(owner, SERVER)


def xsrf_of(html: str) -> str:
    m = re.search(r'name="_xsrf" value="([^"]+)"', html)
    assert m, html[:500]
    return m.group(1)


def test_a_participant_course_instance_starts_with_the_materials(course_hub):
    hub, _ = course_hub
    assert hub.api("POST", "/users/frank").status_code in (201, 409)  # as visa-training does first
    r = hub.api("POST", f"/users/frank/servers/{SERVER}", json={"course": COURSE})
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("frank", SERVER)
    home = home_of(hub, "frank")
    owner = home.stat().st_uid
    assert (home / "README.md").read_text().startswith("# Python for neutron data")
    assert (home / "data" / "notes.txt").stat().st_uid == owner != 0
    assert not os.path.lexists(home / "escape")
    model = hub.server_model("frank", SERVER)
    options = model["user_options"]
    assert (options["plan"], options["proposal"]) == ("sandbox-small", "P-2021-007")
    assert options["download_until"] and options["course_ends_at"]

    # somebody who is not a participant gets a clear refusal, nothing starts
    assert hub.api("POST", "/users/bob").status_code in (201, 409)
    r = hub.api("POST", f"/users/bob/servers/{SERVER}", json={"course": COURSE})
    assert r.status_code == 403 and "not a participant of the course python-neutron" in r.json()["message"], r.text


def test_a_seat_link_makes_a_guest_once_and_its_work_downloads(course_hub):
    hub, fake = course_hub
    s = requests.Session()
    url = f"{hub.url}/hub/visa/seat/{SEAT}"
    page = s.get(url, timeout=10)
    assert page.status_code == 200 and 'id="visa-seat-join"' in page.text
    assert not fake.seat_used  # the GET consumed nothing
    assert s.post(url, timeout=10, allow_redirects=False).status_code == 403  # no XSRF token: refused
    r = s.post(url, data={"_xsrf": xsrf_of(page.text)}, timeout=30, allow_redirects=False)
    assert r.status_code == 302 and r.headers["location"].endswith(f"/hub/spawn-pending/{GUEST}/{SERVER}"), r.text
    hub.wait_ready(GUEST, SERVER)
    assert (home_of(hub, GUEST) / "README.md").exists()
    user = hub.api("GET", f"/users/{GUEST}").json()
    assert f"course:{COURSE}" in user["groups"]
    home = s.get(f"{hub.url}/hub/home", timeout=10)
    assert home.status_code == 200 and "Python for neutron data" in home.text and 'id="visa-pending"' not in home.text
    assert f"visa/course-work/{GUEST}/{SERVER}" in home.text

    # the link again, from another browser: a clear page, no new account
    other = requests.Session()
    again = other.post(url, data={"_xsrf": xsrf_of(other.get(url, timeout=10).text)}, timeout=10,
                       allow_redirects=False)
    assert again.status_code == 410 and "already used" in again.text
    unknown = other.get(f"{hub.url}/hub/visa/seat/not%20a%20token", timeout=10)
    assert unknown.status_code == 404 and "not valid" in unknown.text

    # "Download my work": the guest's own home as a tar.gz; not someone else's
    work = s.get(f"{hub.url}/hub/visa/course-work/{GUEST}/{SERVER}", timeout=60)
    assert work.status_code == 200 and work.headers["Content-Type"] == "application/gzip", work.text[:300]
    with tarfile.open(fileobj=io.BytesIO(work.content)) as tar:
        assert tar.extractfile("./README.md").read().startswith(b"# Python for neutron data")
    assert s.get(f"{hub.url}/hub/visa/course-work/frank/{SERVER}", timeout=10).status_code == 403
