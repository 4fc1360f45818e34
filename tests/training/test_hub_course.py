"""The spawner's course path against a stand-in of visa-training's internal API (the contract):
the course forces plan, proposal and materials, its end is saved, non-participants are refused."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from jupyterhub.spawner import SpawnException
from tornado import web
from tornado.httpserver import HTTPServer

from tests.spawner.test_spawner import FakeBackend, fresh_backends, make_spawner  # noqa: F401 (fixture)
from tests.support import free_port
from visa_spawner import course as courses

on_fixture_loop = pytest.mark.asyncio(loop_scope="session")  # the loop the API fixture listens on
TOKEN = "internal-secret"
NOW = datetime.now(UTC)


def participant(**over) -> dict:
    return {"course": "python-neutron", "title": "Python for neutron data", "plan": "fake-small",
            "proposal": "P-2021-007", "materials": "/srv/courses/python-neutron",
            "starts_at": (NOW - timedelta(days=1)).isoformat(), "ends_at": (NOW + timedelta(days=1)).isoformat(),
            "download_until": (NOW + timedelta(days=8)).isoformat(), "started": True, "warm_pool": True, **over}


class FakeTrainingAPI:
    """GET courses/<course>/participants/<user>: `seats[(course, user)]` or 404; 403 without the token."""

    def __init__(self) -> None:
        self.seats: dict[tuple[str, str], dict] = {}
        self.auth_seen: list[str] = []
        api = self

        class Participant(web.RequestHandler):
            def get(self, course: str, user: str) -> None:
                api.auth_seen.append(self.request.headers.get("Authorization", ""))
                if self.request.headers.get("Authorization") != f"token {TOKEN}":
                    raise web.HTTPError(403)
                seat = api.seats.get((course, user))
                if seat is None:
                    self.set_status(404)
                    self.finish({"error": f"{user} is not a participant of {course}"})
                    return
                self.finish(seat)

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/services/visa-training/api/internal/"
        self.server = HTTPServer(web.Application([
            (r"/services/visa-training/api/internal/courses/([^/]+)/participants/([^/]+)", Participant)]))
        self.server.listen(self.port, "127.0.0.1")


@pytest.fixture
async def api():
    fake_api = FakeTrainingAPI()
    yield fake_api
    fake_api.server.stop()


def course_spawner(api_url: str, **options):
    spawner = make_spawner(user_options={"course": "python-neutron", **options})
    spawner.orm_spawner.name, spawner.orm_spawner.display_name = "course-python-neutron", ""
    spawner.training_api_url, spawner.training_api_token = api_url, TOKEN
    return spawner


@on_fixture_loop
async def test_a_participant_gets_the_course_plan_proposal_materials_and_pool(api):
    api.seats[("python-neutron", "alice")] = participant()
    spawner = course_spawner(api.url)
    await spawner.start()
    spec = FakeBackend.spec
    assert (spec.plan.id, spec.proposal) == ("fake-small", "P-2021-007")  # not in alice's own proposals
    assert spec.data_path.endswith("/P-2021-007")
    assert (spec.materials, spec.warm_pool) == ("/srv/courses/python-neutron", "python-neutron")
    assert spawner.user_options["download_until"] == courses.iso(courses.parse_time(participant()["download_until"]))
    assert spawner.user_options["course_ends_at"] and spawner.orm_spawner.display_name == "Python for neutron data"
    assert api.auth_seen == [f"token {TOKEN}"]


@on_fixture_loop
async def test_no_warm_pool_when_the_course_has_none(api):
    api.seats[("python-neutron", "alice")] = participant(warm_pool=False)
    await course_spawner(api.url).start()
    assert FakeBackend.spec.warm_pool == ""


@on_fixture_loop
async def test_a_non_participant_is_refused_with_a_clear_message(api):
    with pytest.raises(SpawnException) as e:
        await course_spawner(api.url).start()
    assert e.value.status_code == 403 and "not a participant of the course python-neutron" in e.value.message
    assert FakeBackend.instance().calls == []


@on_fixture_loop
async def test_the_service_down_is_said_plainly():
    port = free_port()  # nothing listens there
    with pytest.raises(SpawnException) as e:
        await course_spawner(f"http://127.0.0.1:{port}/services/visa-training/api/internal/").start()
    assert e.value.message == courses.NOT_ANSWERING
    assert FakeBackend.instance().calls == []


@on_fixture_loop
async def test_a_silent_service_times_out(monkeypatch):
    async def silent(reader, writer):
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setattr(courses, "API_TIMEOUT", 0.3)
    try:
        with pytest.raises(SpawnException) as e:
            await course_spawner(f"http://127.0.0.1:{port}/").start()
    finally:
        server.close()
    assert e.value.message == courses.NOT_ANSWERING


@on_fixture_loop
async def test_after_the_course_end_no_start(api):
    api.seats[("python-neutron", "alice")] = participant(ends_at=(NOW - timedelta(hours=1)).isoformat())
    with pytest.raises(SpawnException) as e:
        await course_spawner(api.url).start()
    assert "ended on" in e.value.message and "download your work" in e.value.message


@on_fixture_loop
async def test_the_course_option_only_on_its_own_server(api):
    api.seats[("python-neutron", "alice")] = participant()
    spawner = make_spawner(user_options={"course": "python-neutron"})  # its server is "analysis"
    spawner.training_api_url, spawner.training_api_token = api.url, TOKEN
    with pytest.raises(SpawnException) as e:
        await spawner.start()
    assert "course-python-neutron" in e.value.message and api.auth_seen == []


@pytest.mark.parametrize(("quota", "servers", "expected"), [
    (2, [("a", {}), ("course-x", {"course": "x", "course_ends_at": "2026-01-01T00:00:00+00:00"})], 3),
    (2, [("course-x", {"course": "x"})], 2),  # refused or never started: counts
    (2, [("course-y", {"course": "x", "course_ends_at": "t"})], 2),  # not its own server name
    (2, [("course-x", {})], 2),  # an ordinary instance named like a course
    (-1, [("course-x", {"course": "x", "course_ends_at": "t"})], -1),
    (0, [("course-x", {"course": "x", "course_ends_at": "t"})], 0),
])
def test_course_instances_do_not_use_the_quota(quota, servers, expected):
    assert courses.quota_beside_courses(quota, servers) == expected


@pytest.mark.parametrize(("options", "expected"), [
    ({"course": "x", "download_until": (NOW + timedelta(minutes=1)).isoformat()}, True),
    ({"course": "x", "download_until": (NOW - timedelta(minutes=1)).isoformat()}, False),
    ({"download_until": (NOW + timedelta(days=1)).isoformat()}, False),  # not a course instance
    ({"course": "x", "download_until": "not a date"}, False),
    ({"course": "x"}, False),
    (None, False),
])
def test_download_window(options, expected):
    assert courses.download_open(options, NOW) is expected


@on_fixture_loop
async def test_the_hub_limit_leaves_room_for_course_instances(tmp_path):
    from tests.spawner.test_quota_overrides import handler_of, spawner_with
    from visa_spawner.handlers import named_server_limit

    handler = handler_of(spawner_with(tmp_path, 2, None))
    confirmed = SimpleNamespace(user_options={"course": "c", "course_ends_at": "2026-01-01T00:00:00+00:00"})
    handler.current_user.orm_spawners = {"": SimpleNamespace(user_options={}), "a": SimpleNamespace(user_options={}),
                                         "course-c": confirmed}
    assert await named_server_limit(handler) == 3  # two of one's own, beside the course's
