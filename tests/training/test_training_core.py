"""visa-training's core without a hub: the course YAML, uploaded lists, the plan check, seats (SQLite,
with a real race), the internal API's answers and its secret, and the end-of-course sweep."""
from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from tests.support import free_port
from visa_spawner.archives import Archive, archive_id, owner_dir
from visa_training.app import make_app
from visa_training.course import CourseError, load_courses, parse_course
from visa_training.roster import plan_refusal, read_list
from visa_training.store import Store
from visa_training.training import Directory, Training

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]
PLANS = [{"id": "sandbox-small", "display_name": "Small sandbox", "roles": []},
         {"id": "staff-only", "display_name": "Staff", "roles": ["STAFF"]}]


def course(**over):
    raw = {"id": "py", "title": "Python", "trainers": ["tina"], "start": "today", "end": "today+1",
           "plan": "sandbox-small", **over}
    return parse_course(raw, NOW)


def test_the_demo_yaml_loads_with_absolute_materials_and_the_course_end_of_day():
    (demo,) = load_courses(REPO / "hub_config/demo/courses.yaml", NOW)
    assert (demo.id, demo.trainers, demo.proposal, demo.guest_seats) == ("python-neutron", ("tina",), "P-2021-007", 3)
    assert "frank" in demo.participants and Path(demo.materials, "exercise-1.ipynb").is_file()
    assert demo.starts_at == datetime(2026, 12, 2, tzinfo=UTC)
    assert demo.ends_at == datetime(2026, 12, 5, 23, 59, 59, tzinfo=UTC)
    assert demo.download_until == demo.ends_at + timedelta(days=7)


@pytest.mark.parametrize("over, message", [
    ({"id": "Bad_Id"}, "course 'Bad_Id', id:"),
    ({"end": "yesterday"}, "course 'py', end: 'yesterday' is not an ISO date"),
    ({"end": "2026-01-01"}, "course 'py', end: must be after the start"),
    ({"trainers": []}, "course 'py', trainers: at least one"),
    ({"participants": ["ok", "not ok"]}, "course 'py', participants: 'not ok'"),
    ({"guest_seats": -1}, "course 'py', guest_seats:"),
    ({"seats": 3}, "course 'py', seats: unknown field"),
    ({"materials": "../../etc"}, "course 'py', materials:"),
])
def test_a_bad_field_is_named_with_its_course(over, message):
    with pytest.raises(CourseError) as e:
        parse_course({"id": "py", "title": "Python", "trainers": ["tina"], "start": "2026-12-01",
                      "end": "2026-12-04", "plan": "p", **over}, NOW, base=REPO / "hub_config/demo")
    assert message in str(e.value)


def test_an_uploaded_list_gets_a_verdict_per_line_and_the_valid_ones():
    people = {"frank": "frank@example.org", "paul": "paul@example.org"}
    text = "frank\n\nPaul Mensah <PAUL@example.org>\nnobody\nfrank\nnot a name!\nx@y\n"
    report = read_list(text, lambda n: n if n in people else None,
                       {v: k for k, v in people.items()}.get, already=[])
    assert [(v.line, v.verdict, v.user) for v in report] == [
        (1, "added", "frank"), (3, "added", "paul"), (4, "unknown", None), (5, "duplicate", "frank"),
        (6, "malformed", None), (7, "malformed", None)]


def test_a_plan_the_participants_may_not_use_is_refused_with_the_reason():
    assert plan_refusal("sandbox-small", PLANS, {"frank": ["GUEST"]}, 3) is None
    assert "frank" in plan_refusal("staff-only", PLANS, {"frank": ["GUEST"], "tina": ["STAFF"]}, 0)
    assert "guest seats" in plan_refusal("staff-only", PLANS, {}, 1)
    assert "no plan 'gpu'" in plan_refusal("gpu", PLANS, {}, 0)


@pytest.fixture
def store(tmp_path):
    clock = [NOW]
    s = Store.from_url(f"sqlite:///{tmp_path / 't.sqlite'}", b"k" * 32, clock=lambda: clock[0])
    s.now = clock
    yield s
    s.engine.dispose()


def test_seats_are_shown_again_stored_hashed_and_used_once_even_when_raced(store):
    store.save_course_sync(course(guest_seats=2), source="yaml", actor="t")
    first, second = store.seats_sync("py")
    assert first["state"] == "free" and len(first["token"]) == 43  # 32 bytes, URL-safe
    with store.engine.connect() as conn:
        assert first["token"] not in json.dumps([list(r) for r in conn.exec_driver_sql("select * from visa_training_seats")],
                                                default=str)
    results, barrier = [], threading.Barrier(8)

    def redeem():
        barrier.wait()
        try:
            results.append(store.redeem_sync(first["token"])[1])
        except Exception as e:  # noqa: BLE001 - the verdict is what we compare
            results.append(getattr(e, "status", repr(e)))

    threads = [threading.Thread(target=redeem) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results, key=str) == sorted(["py-guest1"] + [410] * 7, key=str), results
    assert [s["state"] for s in store.seats_sync("py")] == ["used", "free"]
    assert store.participant_sync("py", "py-guest1")["kind"] == "guest"
    store.now[0] = NOW + timedelta(days=3)
    with pytest.raises(Exception) as e:
        store.redeem_sync(second["token"])
    assert e.value.status == 410 and "ended" in e.value.message
    assert store.seats_sync("py")[1]["state"] == "expired"
    with pytest.raises(Exception) as e:
        store.redeem_sync("x" * 43)
    assert e.value.status == 404


class StubHub:
    def __init__(self) -> None:
        self.users: dict[str, dict] = {}
        self.deleted: list[str] = []
        self.archives_deleted: list[tuple[str, str]] = []

    def fresh(self):
        from contextlib import nullcontext
        return nullcontext()

    async def user(self, name):
        return self.users.get(name)

    async def delete_user(self, name):
        self.deleted.append(name)

    async def delete_archive(self, owner, archive):
        self.archives_deleted.append((owner, archive))

    async def delete_pool(self, name):
        pass


async def test_the_internal_api_answers_the_hub_only_and_the_sweep_removes_guests_after_downloads(store, tmp_path):
    hub = StubHub()
    training = Training(store, hub, plans=PLANS, directory=Directory(), archive_dir=str(tmp_path / "archives"))
    await store.save_course(course(participants=("frank",), guest_seats=1, proposal="P-2021-007"),
                            source="yaml", actor="t")
    port = free_port()
    server = make_app(training, "/services/visa-training/", "/hub/", b"c" * 32, "s3cret").listen(port, "127.0.0.1")
    base = f"http://127.0.0.1:{port}/services/visa-training/api/internal/"
    client = AsyncHTTPClient()

    async def call(path, token="s3cret", method="GET"):
        try:
            r = await client.fetch(base + path, method=method, body=b"" if method == "POST" else None,
                                   headers={"Authorization": f"token {token}"})
            return r.code, json.loads(r.body)
        except HTTPClientError as e:
            return e.code, json.loads(e.response.body)

    try:
        code, body = await call("courses/py/participants/frank")
        assert code == 200 and body["plan"] == "sandbox-small" and body["proposal"] == "P-2021-007"
        assert (body["started"], body["warm_pool"], body["ends_at"]) == (False, False, "2026-12-04T23:59:59Z")
        assert (await call("courses/py/participants/alice"))[0] == 404
        assert (await call("courses/py/participants/frank", token="wrong"))[0] == 403
        token = store.seats_sync("py")[0]["token"]
        code, body = await call(f"seats/{token}/redeem", method="POST")
        assert (code, body["user"], body["expires"], body["course"]) == (200, "py-guest1", "2026-12-04", "py")
        code, body = await call(f"seats/{token}/redeem", method="POST")
        assert (code, body) == (410, {"error": "This sign-up link was already used."})
    finally:
        server.stop()

    folder = owner_dir(tmp_path / "archives", "py-guest1")
    folder.mkdir(parents=True)
    made = Archive(id=archive_id("course-py", NOW), file="a.tar.gz", owner="py-guest1", server="course-py",
                   display_name="Python", proposal="P-2021-007", plan="sandbox-small", backend="sandbox",
                   created=NOW.isoformat(), size=3)
    (folder / "a.tar.gz").write_bytes(b"abc")
    (folder / f"{made.id}.json").write_text(json.dumps(made.sidecar()))
    hub.users["py-guest1"] = {"name": "py-guest1", "servers": {"course-py": {}}}
    store.now[0] = NOW + timedelta(days=9)  # past the end + 7 download days
    assert await training.sweep() == []  # its instance is still there
    hub.users["py-guest1"]["servers"] = {}
    assert await training.sweep() == ["py-guest1"]
    assert hub.deleted == ["py-guest1"] and store.participant_sync("py", "py-guest1") is None
    assert hub.archives_deleted == [("py-guest1", made.id)]
    assert await asyncio.wait_for(training.sweep(), 5) == []  # once


async def test_a_course_from_the_page_checks_its_plan_against_the_participants_roles(store):
    training = Training(store, StubHub(), plans=PLANS, materials_root=str(REPO / "hub_config/demo/courses"),
                        directory=Directory(str(REPO / "hub_config/demo/catalogue.yaml")))
    form = {"id": "staff-course", "title": "Staff only", "start": "2026-12-04", "end": "2026-12-05",
            "plan": "staff-only", "materials": "python-neutron",
            "participants": "dave\nFrank Dubois <frank.dubois@example.org>\nghost\n"}
    with pytest.raises(Exception) as e:
        await training.create_course("tina", form)
    assert e.value.status == 400 and "frank" in e.value.message and "dave" not in e.value.message.split(":")[-1]
    assert await store.course("staff-course") is None
    with pytest.raises(Exception) as e:
        await training.create_course("tina", {**form, "plan": "sandbox-small", "materials": "../.."})
    assert e.value.status == 400 and "materials" in e.value.message
    course, report = await training.create_course("tina", {**form, "plan": "sandbox-small"})
    assert [(v["verdict"], v["user"]) for v in report] == [("added", "dave"), ("added", "frank"), ("unknown", None)]
    assert course.trainers == ("tina",) and course.materials.endswith("courses/python-neutron")
    assert (await training.course_for("staff-course", "tina", admin=False)).participants == ("dave", "frank")
    with pytest.raises(Exception) as e:
        await training.course_for("staff-course", "dave", admin=False)
    assert e.value.status == 403


class PoolHub(StubHub):
    """A hub whose pool API answers `answer` to a PUT and remembers the pools it holds."""

    def __init__(self, answer):
        super().__init__()
        self.answer, self.pools, self.known, self.drained = answer, [], set(), []

    async def put_pool(self, name, body):
        self.pools.append((name, body))
        if self.answer is not None:
            self.known.add(name)
        return self.answer

    async def get_pool(self, name):
        return {"name": name} if name in self.known else None

    async def delete_pool(self, name):
        self.known.discard(name)
        self.drained.append(name)


async def no_start(*args):  # the instances themselves are the hub test's
    return None


async def test_start_the_class_asks_for_a_pool_of_the_free_seats_plus_the_spare_and_says_when_there_is_none(store):

    await store.save_course(course(guest_seats=2), source="yaml", actor="t")
    for answer, pooled in ((None, False), ({"name": "py"}, True)):
        hub = PoolHub(answer)
        training = Training(store, hub, plans=PLANS, pool_spare=1)
        training._start_all = no_start
        result = await training.start_class(await store.course("py"), "tina")
        assert hub.pools == [("py", {"plan": "sandbox-small", "proposal": "", "materials": "", "size": 3})]
        assert result["warm_pool"] is pooled and (pooled or "no warm pool" in result["note"])
    row = await store.course_row("py")
    assert row["started_by"] == "tina" and row["pool"] == "py"


async def test_the_sweep_puts_again_a_pool_the_hub_forgot_and_drains_it_when_the_course_ends(store):
    await store.save_course(course(guest_seats=2), source="yaml", actor="t")
    hub = PoolHub({"name": "py"})
    training = Training(store, hub, plans=PLANS, pool_spare=1)
    training._start_all = no_start
    await training.start_class(await store.course("py"), "tina")
    await training.sweep()
    assert len(hub.pools) == 1, "the hub still knew the pool: nothing to put"
    hub.known.clear()  # the hub restarted
    await training.sweep()
    assert hub.pools[1] == ("py", {"plan": "sandbox-small", "proposal": "", "materials": "", "size": 3})
    assert hub.known == {"py"} and (await store.course_row("py"))["pool"] == "py"
    hub.known.clear()
    hub.answer = None  # a hub that no longer has pools: the course page says so
    await training.sweep()
    row = await store.course_row("py")
    assert row["pool"] is None and "no warm pool" in row["start_note"]
    await training.sweep()
    assert len(hub.pools) == 3, "a course without a pool is not put again"

    hub.answer = {"name": "py"}
    await training.start_class(await store.course("py"), "tina")
    store.now[0] = NOW + timedelta(days=3)  # the course ended
    await training.sweep()
    assert hub.drained == ["py"] and (await store.course_row("py"))["pool"] is None


class SpawnHub(StubHub):
    """Records when each start request arrives and how many are being started at once."""

    def __init__(self, spawn_seconds: float) -> None:
        super().__init__()
        self.spawn_seconds, self.spawned_at, self.in_flight, self.most_in_flight = spawn_seconds, [], 0, 0

    async def create_user(self, name):
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        return {"name": name}

    async def spawn(self, name, server, options):
        self.spawned_at.append(asyncio.get_running_loop().time())
        await asyncio.sleep(self.spawn_seconds)  # the hub adopting a pooled server
        self.users[name] = {"servers": {server: {"ready": True}}}
        self.in_flight -= 1

    async def collab_call(self, method, url, body):
        return {}


async def test_the_class_start_spaces_its_start_requests_and_bounds_those_in_flight(store):
    people = [f"p{i}" for i in range(6)]
    await store.save_course(course(participants=people), source="yaml", actor="t")
    hub = SpawnHub(spawn_seconds=0.3)
    training = Training(store, hub, plans=PLANS, start_interval=0.1, start_concurrency=2)
    await training._start_all(await store.course("py"))
    gaps = [b - a for a, b in pairwise(hub.spawned_at)]
    assert len(hub.spawned_at) == 6 and min(gaps) >= 0.1 - 0.005, gaps
    assert hub.most_in_flight == 2
    assert [store.participant_sync("py", p)["state"] for p in people] == ["ready"] * 6
