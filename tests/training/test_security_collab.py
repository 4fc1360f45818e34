"""Security of course instances in visa-collab (issue 19 review): only the course's trainers and
administrators may watch (GUEST) or help (SUPPORT) outside the proposal's team; a participant
cannot hand their course instance to a friend. Against an in-memory hub (fast)."""
from __future__ import annotations

import pytest

from tests.collab.fakehub import FakeHub
from visa_collab import db
from visa_collab.collab import CollabError, Collaboration
from visa_collab.roles import Role, course_trainers, refusal
from visa_spawner.course import CourseSeat

COURSE_OPTIONS = {"course": "cls", "proposal": "P-2021-007", "course_trainers": ["tina"]}


@pytest.fixture
def fake() -> FakeHub:
    h = FakeHub()
    h.add_person("frank", ["role:user", "course:cls"])
    h.add_person("tina", ["role:staff"])  # the trainer: not on the proposal, no support role
    h.add_person("alice", ["role:user"])  # the participant's friend
    h.add_person("root", ["role:admin"], admin=True)
    h.add_server("frank", "course-cls", "P-2021-007")
    h.people["frank"]["servers"]["course-cls"]["user_options"] = dict(COURSE_OPTIONS)
    # an ordinary instance whose owner wrote course_trainers into its options himself
    h.add_server("frank", "run", "P-2021-007")
    h.people["frank"]["servers"]["run"]["user_options"] = {"proposal": "P-2021-007", "course_trainers": ["alice"]}
    return h


@pytest.fixture
def collab(tmp_path, fake: FakeHub) -> Collaboration:
    engine = db.connect(f"sqlite:///{tmp_path / 'c.sqlite'}")
    db.migrate(engine)
    return Collaboration(engine, fake)


@pytest.mark.parametrize("role", ["guest", "support"])
async def test_a_participant_cannot_share_the_course_instance_with_a_non_trainer(collab, fake, role) -> None:
    with pytest.raises(CollabError) as e:
        await collab.add_member("frank", "frank", "course-cls", "alice", role)
    assert e.value.status == 403
    assert not fake.scopes_of("frank", "course-cls", "alice")


async def test_the_course_trainers_and_admins_may_watch_and_help(collab, fake) -> None:
    await collab.add_member("frank", "frank", "course-cls", "tina", "guest")
    await collab.change_role("frank", "frank", "course-cls", "tina", "support")  # Help
    assert "custom:visa-support!server=frank/course-cls" in fake.scopes_of("frank", "course-cls", "tina")
    await collab.add_member("frank", "frank", "course-cls", "root", "support")
    with pytest.raises(CollabError) as e:  # a trainer still gets no USER role (the team's)
        await collab.change_role("frank", "frank", "course-cls", "tina", "user")
    assert e.value.status == 403


async def test_options_of_a_server_that_is_no_course_instance_name_no_trainer(collab, fake) -> None:
    with pytest.raises(CollabError) as e:
        await collab.add_member("frank", "frank", "run", "alice", "guest")
    assert e.value.status == 403


async def test_reconciliation_revokes_a_course_grant_of_someone_no_longer_a_trainer(collab, fake) -> None:
    await collab.add_member("frank", "frank", "course-cls", "tina", "support")
    fake.people["frank"]["servers"]["course-cls"]["user_options"]["course_trainers"] = ["tom"]  # restarted
    assert await collab.reconcile() == 1
    assert not fake.scopes_of("frank", "course-cls", "tina")


def test_refusal_and_course_trainers_rules() -> None:
    staff = ["role:staff"]
    for role in (Role.GUEST, Role.SUPPORT):
        assert refusal(role, "tina", staff, "P-2021-007", "course-cls", ("tina",)) is None
        assert refusal(role, "alice", ["role:user"], "P-2021-007", "course-cls", ("tina",)) is not None
        assert refusal(role, "root", ["role:admin"], None, "course-cls") is None
        assert refusal(role, "tina", staff, "P-2021-007", "run", ("tina",)) is not None
    assert course_trainers("course-cls", COURSE_OPTIONS) == ("tina",)
    assert course_trainers("course-other", COURSE_OPTIONS) == ()
    assert course_trainers("course-cls", {"course_trainers": ["tina"]}) == ()
    assert course_trainers("course-cls", {"course": "cls", "course_trainers": "tina"}) == ()


def test_the_spawner_always_writes_the_trainers_the_service_names() -> None:
    answer = {"course": "cls", "title": "T", "plan": "p", "starts_at": "2026-12-01T00:00:00Z",
              "ends_at": "2026-12-02T00:00:00Z", "download_until": "2026-12-09T00:00:00Z"}
    owner_options = {"course": "cls", "course_trainers": ["alice"]}
    assert {**owner_options, **CourseSeat.from_json(answer).saved_options()}["course_trainers"] == []
    seat = CourseSeat.from_json({**answer, "trainers": ["tina", 3]})
    assert {**owner_options, **seat.saved_options()}["course_trainers"] == ["tina"]


async def test_the_training_service_grants_only_the_course_trainers_on_its_instances(collab, fake) -> None:
    await collab.course_grant("visa-training", "frank", "course-cls", "tina", "guest")  # the class start
    await collab.course_grant("visa-training", "frank", "course-cls", "tina", "support")  # Help
    assert "custom:visa-support!server=frank/course-cls" in fake.scopes_of("frank", "course-cls", "tina")
    assert (await collab.course_grant("visa-training", "frank", "course-cls", "tina", "support"))["unchanged"]
    (grant,) = await collab.active_grants("frank", "course-cls")
    assert (grant["granted_by"], grant["source"]) == ("frank", "direct")  # reconciliation keeps it
    for server, member, role in (("course-cls", "alice", "guest"), ("course-cls", "tina", "user"),
                                 ("run", "alice", "guest"), ("course-cls", None, "guest")):
        with pytest.raises(CollabError) as e:
            await collab.course_grant("visa-training", "frank", server, member, role)
        assert e.value.status == 403, (server, member, role)
    assert not fake.scopes_of("frank", "course-cls", "alice") and not fake.scopes_of("frank", "run", "alice")


def test_the_training_service_cannot_mint_tokens() -> None:
    from visa_training.hub_config import SERVICE_SCOPES

    assert "tokens" not in SERVICE_SCOPES and "access:services!service=visa-collab" in SERVICE_SCOPES
