"""Security of courses made on visa-training's page (issue 19 review): a course mounts its proposal's
data for every participant whatever their rights, and its instances escape their quota, so only
facility staff and administrators create courses, and only on open data. No hub (fast)."""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from visa_training.store import Store
from visa_training.training import Directory, Training, TrainingError

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
FORM = {"id": "sneaky", "title": "Sneaky", "start": "2026-12-04", "end": "2026-12-05", "plan": "sandbox-small",
        "materials": "python-neutron", "participants": "alice\n"}


@pytest.fixture
def training(tmp_path):
    store = Store.from_url(f"sqlite:///{tmp_path / 't.sqlite'}", b"k" * 32, clock=lambda: NOW)
    yield Training(store, hub=None, plans=[{"id": "sandbox-small", "display_name": "Small", "roles": []}],
                   materials_root=str(REPO / "hub_config/demo/courses"),
                   directory=Directory(str(REPO / "hub_config/demo/catalogue.yaml")))
    store.engine.dispose()


@pytest.mark.parametrize("proposal", ["P-2026-042", "P-2026-011", "P-9999-999"])  # embargoed, embargoed, unknown
async def test_a_course_on_data_that_is_not_open_is_refused(training, proposal) -> None:
    with pytest.raises(TrainingError) as e:
        await training.create_course("tina", {**FORM, "proposal": proposal})
    assert e.value.status == 400 and f"{proposal} is not open data" in e.value.message
    assert await training.store.course("sneaky") is None


async def test_only_staff_and_administrators_create_courses(training) -> None:
    with pytest.raises(TrainingError) as e:  # alice (USER) would get instances outside her quota
        await training.create_course("alice", {**FORM, "proposal": "P-2021-007"})
    assert e.value.status == 403 and "STAFF" in e.value.message
    with pytest.raises(TrainingError):
        await training.create_course("paul", FORM)  # a GUEST
    course, _ = await training.create_course("tina", {**FORM, "proposal": "P-2021-007"})
    assert course.proposal == "P-2021-007" and course.trainers == ("tina",)
    made, _ = await training.create_course("alice", {**FORM, "id": "by-admin"}, admin=True)
    assert made.id == "by-admin"
