"""Course materials and Reset on the lab cloud, through a real hub and the training service: a
participant's OpenStack course instance gets the course's materials in its home (pushed by the hub
through the instance's Jupyter, started for real by the boot emulator), a trainer's Reset gives a
fresh server with only the materials again, another trainer's Reset is refused (403), and materials
too big or gone fail the start with a message before any server is requested."""
from __future__ import annotations

import base64
import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.hubtools import Browserless
from tests.spawner.openstack import lab
from tests.spawner.openstack.boot_emulator import BootEmulator, wait_until
from tests.spawner.openstack.hubrun import make_hub, progress_events
from tests.spawner.openstack.support import new_hub_id
from tests.training.course_instances import BLOB, MATERIALS, home_listing, instance_api, write_materials, write_own_file
from tests.training.test_grid_hub import Trainer
from visa_spawner.backends.openstack.model import hub_tag

pytestmark = [pytest.mark.openstack, pytest.mark.root]

CONFIG = os.path.join(os.path.dirname(__file__), "course_hub_config.py")
COURSES = """courses:
  - {id: os-course, title: Cloud course, trainers: [tina], start: today-1, end: today+2, plan: openstack-small,
     materials: courses/os-course, participants: [frank]}
  - {id: other-course, title: Dave's course, trainers: [dave], start: today-1, end: today+2,
     plan: openstack-small, materials: courses/os-course, participants: [paul]}
  - {id: pool-course, title: Pooled, trainers: [tina], start: today-1, end: today+2, plan: openstack-small,
     materials: courses/os-course, participants: [quinn]}
  - {id: big-course, title: Too big, trainers: [tina], start: today-1, end: today+2, plan: openstack-small,
     materials: courses/big, participants: [frank]}
  - {id: gone-course, title: Gone, trainers: [tina], start: today-1, end: today+2, plan: openstack-small,
     materials: courses/gone, participants: [frank]}
"""


def write_courses(state) -> None:
    write_materials(state / "courses" / "os-course")
    (state / "courses" / "big").mkdir()
    (state / "courses" / "big" / "huge.bin").write_bytes(b"x" * (2**20 + 1))
    (state / "courses" / "gone").mkdir()
    (state / "courses" / "gone" / "a.txt").write_text("a")
    (state / "courses.yaml").write_text(COURSES)


def start_course(hub, course: str) -> list[dict]:
    r = hub.api("POST", f"/users/frank/servers/course-{course}", json={"course": course})
    assert r.status_code in (201, 202), r.text[:300]
    return progress_events(hub, "frank", f"course-{course}")


@contextmanager
def course_hub(lab_admin) -> Iterator[tuple]:
    """A hub of this test's courses (materials up to 1 MiB) on the lab, and real Jupyters booted for
    its servers; (hub, its servers' tag, the boot emulator), all of it gone after."""
    hub_id = new_hub_id()
    tag = hub_tag(hub_id)
    hub = make_hub(hub_id, config=CONFIG, materials={"max_bytes": 2**20})
    write_courses(hub.state)
    hub.start()
    emulator = BootEmulator(lambda: lab.connect("lab"), tag, mode="real", boot_delay=1).start()
    try:
        yield hub, tag, emulator
    finally:
        emulator.stop()
        hub.stop()
        lab.delete_all(lab_admin, tag)


def server_ids(lab_admin, tag: str) -> set[str]:
    return {s.id for s in lab.servers_with_tag(lab_admin, tag)}


def test_materials_and_reset_on_openstack(openstack_lab, lab_admin):
    with course_hub(lab_admin) as (hub, tag, emulator):
        for user in ("frank", "tina", "dave"):
            assert Browserless(hub, user, f"{user}-demo").logged_in
        events = start_course(hub, "os-course")
        messages = [e.get("message", "") for e in events]
        assert events[-1].get("ready"), (messages, hub.log_tail(40), emulator.errors)
        assert any("Copying the course materials" in m for m in messages), messages
        assert home_listing(hub, "frank", "os-course") == MATERIALS
        r = instance_api(hub, "GET", "/data.bin", "frank", "os-course", params={"content": 1, "format": "base64", "hash": 1})
        assert r.status_code == 200 and base64.b64decode(r.json()["content"]) == BLOB
        assert r.json()["hash"] == hashlib.sha256(BLOB).hexdigest()
        r = instance_api(hub, "GET", "/notebooks/intro.ipynb", "frank", "os-course")
        assert r.status_code == 200 and r.json()["type"] == "notebook", r.text[:300]
        first = server_ids(lab_admin, tag)
        assert len(first) == 1
        write_own_file(hub, "frank", "os-course")

        tina, dave = Trainer(hub, "tina"), Trainer(hub, "dave")
        assert dave.page("courses/other-course/grid").status_code == 200
        assert dave.api("POST", "courses/os-course/grid/frank/reset").status_code == 403  # not his course
        # through his own course: frank is no participant of it (the service answers 404 for that)
        assert dave.api("POST", "courses/other-course/grid/frank/reset").status_code == 404
        assert "mine.txt" in home_listing(hub, "frank", "os-course") and server_ids(lab_admin, tag) == first
        assert tina.page("courses/os-course/grid").status_code == 200
        r = tina.api("POST", "courses/os-course/grid/frank/reset")
        assert r.status_code == 200, r.text[:300]
        hub.wait_ready("frank", "course-os-course", timeout=300)
        after = server_ids(lab_admin, tag)
        assert len(after) == 1 and not after & first, "reset keeps the old server"
        assert home_listing(hub, "frank", "os-course") == MATERIALS  # mine.txt is gone
        model = hub.server_model("frank", "course-os-course")
        assert model["user_options"]["course"] == "os-course"

        for course, why in (("big-course", "too big"), ("gone-course", "folder is missing")):
            if course == "gone-course":
                shutil.rmtree(hub.state / "courses" / "gone")
            events = start_course(hub, course)
            assert events[-1].get("failed"), events
            assert why in events[-1].get("message", ""), events[-1]
            assert not any("Requesting a server" in e.get("message", "") for e in events), events
        assert server_ids(lab_admin, tag) == after  # nothing was built for them
        hub.stop_server("frank", "course-os-course", timeout=120)
        wait_until(lambda: not lab.servers_with_tag(lab_admin, tag), 120, "the server deleted")
        assert not emulator.errors, emulator.errors


def test_class_from_a_pool_gets_materials_and_reset_adopts_a_pooled_server(openstack_lab, lab_admin):
    """Start the class (the training service fills the course's pool of servers built ahead and
    starts quinn's instance), then Reset: quinn's new server is one of the pool's, with the materials."""
    with course_hub(lab_admin) as (hub, tag, emulator):
        assert Browserless(hub, "quinn", "quinn-demo").logged_in
        tina = Trainer(hub, "tina")
        assert tina.page("courses/pool-course/grid").status_code == 200
        r = tina.api("POST", "courses/pool-course/start")
        assert r.status_code == 202 and r.json()["warm_pool"] is True, r.text[:300]
        hub.wait_ready("quinn", "course-pool-course", timeout=300)
        assert home_listing(hub, "quinn", "pool-course") == MATERIALS

        def pool_full():
            status = hub.api("GET", "/visa/pools/pool-course").json()
            return status if status.get("size") and status["ready"] == status["size"] else None
        wait_until(pool_full, 180, "the course's pool full")
        pooled = {s.id for s in lab.servers_with_tag(lab_admin, tag) if s.metadata.get("visa-pool") == "pool-course"}
        assert pooled
        write_own_file(hub, "quinn", "pool-course")
        assert tina.api("POST", "courses/pool-course/grid/quinn/reset").status_code == 200
        hub.wait_ready("quinn", "course-pool-course", timeout=300)
        [mine] = [s for s in lab.servers_with_tag(lab_admin, tag) if s.metadata.get("visa-owner") == "quinn"]
        assert mine.id in pooled, "the reset did not adopt a server built ahead"
        assert home_listing(hub, "quinn", "pool-course") == MATERIALS
        r = instance_api(hub, "GET", "/data.bin", "quinn", "pool-course", params={"content": 0, "hash": 1})
        assert r.json()["hash"] == hashlib.sha256(BLOB).hexdigest()
        assert not emulator.errors, emulator.errors
