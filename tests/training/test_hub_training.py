"""The training service on a real hub (demo profile, sandbox backend): a course from YAML, its page
for its trainer only, "Start the class" creating both participants' instances with
``user_options.course`` and sharing them with the trainer through visa-collab."""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hubtools import Hub, demo_state, login_factory, running_hub, wait_for
from tests.spawner.sandbox.sandbox_probe import account

REPO = Path(__file__).resolve().parents[2]
PREFIX = "/services/visa-training/"
COURSE = "cls"


@pytest.fixture(scope="module")
def training_hub() -> Iterator[Hub]:
    state = next(gen := demo_state())
    courses = state / "courses.yaml"
    courses.write_text(json.dumps({"courses": [{
        "id": COURSE, "title": "Class <test>", "trainers": ["tina"], "start": "today", "end": "today+1",
        "plan": "sandbox-small", "proposal": "P-2021-007", "participants": ["frank", "paul"],
        "materials": str(REPO / "hub_config/demo/courses/python-neutron"), "guest_seats": 0}]}))
    try:
        with running_hub(state, extra_env={"VISA_TRAINING_COURSES": str(courses), "VISA_TRAINING_POOL_SPARE": "0"}) as hub:
            yield hub
    finally:
        next(gen, None)


def page_xsrf(html: str) -> str:
    return json.loads(re.search(r"xsrf: (\"[^\"]*\")", html).group(1))


@pytest.mark.root
def test_the_trainer_starts_the_class_and_each_participant_gets_a_shared_course_instance(training_hub: Hub) -> None:
    hub, login = training_hub, login_factory(training_hub)
    tina, frank = login("tina"), login("frank")
    listing = tina.s.get(f"{hub.url}{PREFIX}", timeout=30)
    assert listing.status_code == 200 and f'href="{PREFIX}courses/{COURSE}"' in listing.text, listing.text[:500]
    page = tina.s.get(f"{hub.url}{PREFIX}courses/{COURSE}", timeout=30)
    assert page.status_code == 200, page.text[:500]
    assert "Class &lt;test&gt;" in page.text and "Class <test>" not in page.text  # escaped
    api = f"{hub.url}{PREFIX}api/courses/{COURSE}"
    headers = {"X-XSRFToken": page_xsrf(page.text)}

    # a participant is no trainer: 403, on the page and the API
    other = frank.s.get(f"{hub.url}{PREFIX}courses/{COURSE}", timeout=30)
    assert other.status_code == 403 and "Only the trainers" in other.text
    assert frank.s.get(api, timeout=30).json()["status"] == 403
    mine = frank.s.get(f"{hub.url}{PREFIX}api/my-courses", timeout=30).json()["courses"]
    assert [(c["course"], c["server"]) for c in mine] == [(COURSE, f"course-{COURSE}")]

    # a list with an unknown and a malformed line: reported per line, nothing else changes
    r = tina.s.post(f"{api}/participants", json={"list": "nobody-here\nfrank\nnot valid!"}, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    assert [v["verdict"] for v in r.json()["report"]] == ["unknown", "duplicate", "malformed"]

    r = tina.s.post(f"{api}/start", headers=headers, timeout=30)
    assert r.status_code == 202 and r.json()["warm_pool"] is False, r.text
    for person in ("frank", "paul"):
        model = hub.wait_ready(person, f"course-{COURSE}", timeout=180)
        assert model["user_options"]["course"] == COURSE
        assert model["user_options"]["download_until"]

    def all_ready() -> list | None:
        progress = tina.s.get(api, timeout=30).json()["progress"]
        states = {p["user"]: (p["state"], p["detail"]) for p in progress}
        if any(s[0] == "failed" for s in states.values()):
            raise AssertionError(states)
        return states if all(s[0] == "ready" for s in states.values()) else None

    states = wait_for(all_ready, 60, "every participant's instance ready and shared", interval=1, reraise=AssertionError)
    assert states == {u: ("ready", "Ready, shared with the trainers") for u in ("frank", "paul")}, states
    # the materials are in the participant's home
    home = f"api/contents/home/{account('frank', f'course-{COURSE}')}"
    contents = frank.instance_api("GET", "frank", f"course-{COURSE}", home)
    assert "exercise-1.ipynb" in {c["name"] for c in contents.json()["content"]}, contents.text[:300]
