"""A course on a qemu plan, through a real hub and the training service: the participant's VM gets
the course's materials in its home (pushed by the hub through the VM's Jupyter, SHA-256 checked),
and the trainer's Reset gives a new VM disk holding only the materials again (it was a 409);
materials over the limit fail the start with a message before QEMU is started."""
from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hubtools import Browserless, Hub, demo_state
from tests.spawner.qemu.conftest import progress_messages, qemu_pids, start_qemu_hub
from tests.training.course_instances import BLOB, MATERIALS, home_listing, instance_api, write_materials, write_own_file
from tests.training.test_grid_hub import Trainer
from visa_spawner.backends.qemu.paths import vm_name

pytestmark = [pytest.mark.qemu, pytest.mark.root]

CONFIG = Path(__file__).with_name("hub_qemu_course_config.py")
COURSES = """courses:
  - {id: vm-course, title: VM course, trainers: [tina], start: today-1, end: today+2, plan: vm,
     materials: courses/vm-course, participants: [frank]}
  - {id: big-course, title: Too big, trainers: [tina], start: today-1, end: today+2, plan: vm,
     materials: courses/big, participants: [frank]}
"""


@pytest.fixture(scope="module")
def course_hub(image_dir: str) -> Iterator[Hub]:
    """A qemu hub of its own (its own state, cold boots) with this test's course."""
    for state in demo_state():
        write_materials(state / "courses" / "vm-course")
        (state / "courses" / "big").mkdir()
        (state / "courses" / "big" / "huge.bin").write_bytes(b"x" * (2**20 + 1))
        (state / "courses.yaml").write_text(COURSES)
        yield from start_qemu_hub(state, image_dir, CONFIG)


def vm_dir(hub: Hub) -> Path:
    [overlay] = (hub.state / "qemu" / "instances").glob("*/disk.qcow2")
    return overlay.parent


def test_materials_and_reset_on_a_qemu_course(course_hub: Hub):
    hub = course_hub
    for user in ("frank", "tina"):
        assert Browserless(hub, user, f"{user}-demo").logged_in
    t0 = time.monotonic()
    r = hub.api("POST", "/users/frank/servers/course-vm-course", json={"course": "vm-course"})
    assert r.status_code in (201, 202), r.text[:300]
    messages = progress_messages(hub, "frank", "course-vm-course")
    assert hub.server_model("frank", "course-vm-course")["ready"], (messages, hub.log_tail(40))
    assert any("Copying the course materials" in m for m in messages), messages
    print(f"course instance ready (cold boot, materials in) {time.monotonic() - t0:.1f} s after the request")
    assert home_listing(hub, "frank", "vm-course") == MATERIALS  # no hidden file, no link
    r = instance_api(hub, "GET", "/data.bin", "frank", "vm-course", params={"content": 0, "hash": 1})
    assert r.status_code == 200 and r.json()["hash"] == hashlib.sha256(BLOB).hexdigest(), r.text[:300]
    r = instance_api(hub, "GET", "/notebooks/intro.ipynb", "frank", "vm-course")
    assert r.status_code == 200 and r.json()["type"] == "notebook", r.text[:300]
    write_own_file(hub, "frank", "vm-course")
    marker = vm_dir(hub) / "before-reset"  # goes with the VM's disk
    marker.touch()

    tina = Trainer(hub, "tina")
    assert tina.page("courses/vm-course/grid").status_code == 200
    t0 = time.monotonic()
    r = tina.api("POST", "courses/vm-course/grid/frank/reset")
    assert r.status_code == 200, r.text[:300]
    hub.wait_ready("frank", "course-vm-course", timeout=600)
    print(f"reset: ready again with the materials {time.monotonic() - t0:.1f} s after the trainer's click")
    assert not marker.exists() and (vm_dir(hub) / "disk.qcow2").exists(), "the reset kept the VM's disk"
    assert home_listing(hub, "frank", "vm-course") == MATERIALS  # mine.txt is gone
    assert len(qemu_pids(hub.state)) == 1
    hub.stop_server("frank", "course-vm-course", timeout=120)
    assert qemu_pids(hub.state) == []


def test_materials_too_big_fail_before_any_vm(course_hub: Hub):
    hub = course_hub
    assert Browserless(hub, "frank", "frank-demo").logged_in
    r = hub.api("POST", "/users/frank/servers/course-big-course", json={"course": "big-course"})
    if r.status_code == 400:  # failed within the hub's slow-spawn wait: the answer says why
        messages = [r.json()["message"]]
    else:
        assert r.status_code == 202, r.text[:300]
        messages = progress_messages(hub, "frank", "course-big-course")
    assert any("materials are too big" in m for m in messages), messages
    assert not any("QEMU started" in m for m in messages), messages
    vm = hub.state / "qemu" / "instances" / vm_name("frank", "course-big-course")
    assert qemu_pids(hub.state) == [] and not vm.exists()
