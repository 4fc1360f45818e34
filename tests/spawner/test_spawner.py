"""VisaSpawner's lifecycle over a fake backend: start, progress, poll, stop, saved state, deletes.

No hub and no process: the spawner gets a stand-in user and a `FakeBackend` registered under
the name "fake" (and "sandbox" for states saved by earlier versions), shared like real backends.
"""
from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from jupyterhub.objects import Hub
from jupyterhub.spawner import SpawnException
from traitlets import TraitError
from traitlets.config import Config

import visa_spawner.spawner as spawner_module
from visa_spawner.backends.base import (
    Backend,
    InstanceIdentity,
    InstanceSpec,
    InstanceStatus,
    ProgressCallback,
    StateError,
    UnknownBackendError,
)
from visa_spawner.backends.openstack.state import OpenStackState
from visa_spawner.backends.qemu.state import QemuState
from visa_spawner.backends.sandbox.state import SandboxState
from visa_spawner.spawner import VisaSpawner, check_plans, hub_backend

FAKE = f"{__name__}.FakeBackend"
PLANS = [
    {"id": "fake-small", "display_name": "Small fake", "backend": "fake", "cpus": 1, "memory_mb": 512},
    {"id": "other", "display_name": "Other", "backend": "sandbox", "cpus": 1, "memory_mb": 512},
]
ENTITLEMENTS = {"roles": ["USER"], "quota": 3, "proposals": [{"id": "P-1", "title": "Spins", "instruments": ["D11"]}]}
OPTIONS = {"proposal": "P-1", "plan": "fake-small", "screen": "1920x1080", "keyboard": "fr"}


class FakeBackend(Backend):
    """Records every call (and the last spec it was asked to create, `spec`); `create` reports two
    stages, `status` answers what the test sets."""

    spec: InstanceSpec | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[tuple[str, dict]] = []
        self.answer = InstanceStatus.RUNNING

    async def create(self, spec: InstanceSpec, progress: ProgressCallback) -> dict:
        type(self).spec = spec
        self.calls.append(("create", {"owner": spec.owner, "server_name": spec.server_name, "plan": spec.plan.id}))
        progress(30, "Fake: preparing")
        await asyncio.sleep(0)
        progress(70, "Fake: started")
        return {"backend": spec.plan.backend, "owner": spec.owner, "server_name": spec.server_name,
                "port": spec.port, "handle": "h-1"}

    async def address(self, state: dict) -> tuple[str, int]:
        return "127.0.0.1", int(state["port"])

    async def status(self, state: dict) -> InstanceStatus:
        self.calls.append(("status", state))
        return self.answer

    async def stop(self, state: dict, now: bool = False) -> None:
        self.calls.append(("stop", state))

    async def delete(self, state: dict) -> None:
        self.calls.append(("delete", state))


class FakeUser:
    """What VisaSpawner and JupyterHub's Spawner.get_env read of a user."""

    def __init__(self, name: str = "alice") -> None:
        self.name = self.escaped_name = name
        self.url = f"/user/{name}/"

    async def get_auth_state(self) -> dict:
        return {"visa": ENTITLEMENTS}


@pytest.fixture(autouse=True)
def fresh_backends():
    """Each test starts with no shared backend instance (as a freshly started hub)."""
    FakeBackend.clear_instance()
    yield
    FakeBackend.clear_instance()


def make_spawner(classes: dict[str, str] | None = None, plans: list[dict] | None = None, **kw: Any) -> VisaSpawner:
    config = Config()
    config.VisaSpawner.backend_classes = classes if classes is not None else {"fake": FAKE, "sandbox": FAKE}
    config.VisaSpawner.plans = plans if plans is not None else PLANS
    kw.setdefault("user_options", dict(OPTIONS))
    orm_spawner = SimpleNamespace(name="analysis", display_name="My analysis", user_options=kw["user_options"],
                                  server=None)
    return VisaSpawner(user=FakeUser(), orm_spawner=orm_spawner, hub=Hub(), config=config, api_token="t" * 32, **kw)


async def start_and_watch(spawner: VisaSpawner) -> tuple[tuple[str, int], list[dict]]:
    """Start as the hub does, with a progress listener attached from the beginning."""
    spawner._spawn_pending = True
    events: list[dict] = []

    async def listen() -> None:
        async for event in spawner.progress():
            events.append(event)

    listener = asyncio.ensure_future(listen())
    try:
        address = await spawner.start()
    finally:
        spawner._spawn_pending = False
        await spawner._notify()  # as a new event would: the listener sees the spawn is over
    await asyncio.wait_for(listener, 5)
    return address, events


def fake() -> FakeBackend:
    return FakeBackend.instance()


async def test_start_reports_each_stage_and_saves_who_holds_the_instance():
    spawner = make_spawner()
    (host, port), events = await start_and_watch(spawner)
    assert (host, port) == ("127.0.0.1", spawner.port)
    assert [e["message"] for e in events] == [
        "Checking the request against your proposals and plans", "Fake: preparing", "Fake: started"]
    assert [e["progress"] for e in events] == sorted(e["progress"] for e in events)
    assert fake().calls == [("create", {"owner": "alice", "server_name": "analysis", "plan": "fake-small"})]
    state = spawner.get_state()
    assert state["identity"] == {"backend": "fake", "owner": "alice", "server_name": "analysis"}
    assert state["backend"]["handle"] == "h-1" and state["backend"]["plan"] == "fake-small"


@pytest.mark.parametrize("answer, expected", [
    (InstanceStatus.RUNNING, None), (InstanceStatus.UNKNOWN, None), (InstanceStatus.STOPPED, 0)])
async def test_poll_says_stopped_only_when_the_backend_does(answer, expected):
    spawner = make_spawner()
    await start_and_watch(spawner)
    fake().answer = answer
    assert await spawner.poll() == expected
    kind, state = fake().calls[-1]
    assert kind == "status" and state["handle"] == "h-1" and state["owner"] == "alice"


async def test_state_round_trip_through_a_hub_restart_then_stop_clear_and_delete():
    first = make_spawner()
    await start_and_watch(first)
    saved = first.get_state()

    restarted = make_spawner()  # a new hub process: a new spawner loads the saved state
    restarted.load_state(saved)
    assert await restarted.poll() is None
    await restarted.stop()
    assert fake().calls[-1] == ("stop", {**saved["backend"], **saved["identity"]})

    restarted.clear_state()  # what JupyterHub does after stop
    assert await restarted.poll() == 0
    cleared = restarted.get_state()
    assert cleared == {"identity": saved["identity"]}, "the identity outlives the stop"

    later = make_spawner(user_options={})  # e.g. deleted from the admin panel after another restart
    later.load_state(cleared)
    await later.delete_forever()
    assert fake().calls[-1] == ("delete", {"backend": "fake", "owner": "alice", "server_name": "analysis"})


async def test_one_backend_object_per_hub():
    a, b = make_spawner(), make_spawner()
    assert a.backend("fake") is b.backend("fake") is hub_backend("fake", a.config)


async def test_unknown_backend_is_an_error_that_names_it_and_touches_nothing():
    spawner = make_spawner(classes={"fake": FAKE}, plans=PLANS[:1])
    spawner.load_state({"identity": {"backend": "qemu", "owner": "alice", "server_name": "analysis"},
                        "backend": {"vm": "vm-1", "pid": 42}})
    for step in (spawner.poll(), spawner.stop(), spawner.delete_forever()):
        with pytest.raises(UnknownBackendError, match=r"'qemu' backend, which this hub does not configure"):
            await step
    assert fake().calls == []


async def test_a_stopped_instance_cannot_move_to_another_backend():
    spawner = make_spawner()
    spawner.load_state({"identity": {"backend": "sandbox", "owner": "alice", "server_name": "analysis"}})
    with pytest.raises(SpawnException, match="lives on sandbox"):
        await spawner.start()
    assert fake().calls == []


# -- states saved by the previous version (no identity; cleared to {} on stop) ----------------------
async def test_running_state_of_the_previous_version_still_polls_and_stops():
    old = {"backend": {"backend": "sandbox", "account": "visa-ab12", "uid": 1001, "pid": 4242, "port": 51000,
                       "started": 1.5, "plan": "other"}}
    spawner = make_spawner()
    spawner.load_state(old)
    assert spawner.identity == InstanceIdentity("sandbox", "alice", "analysis")
    assert await spawner.poll() is None
    await spawner.stop()
    kind, state = fake().calls[-1]
    assert kind == "stop" and state["account"] == "visa-ab12" and state["owner"] == "alice"
    assert SandboxState.from_dict(state).pid == 4242


async def test_cleared_state_of_the_previous_version_deletes_through_the_plans_backend():
    spawner = make_spawner(user_options={**OPTIONS, "plan": "other"})
    spawner.load_state({})
    await spawner.delete_forever()
    assert fake().calls == [("delete", {"backend": "sandbox", "owner": "alice", "server_name": "analysis"})]


async def test_cleared_old_state_whose_plan_was_removed_is_not_guessed():
    spawner = make_spawner(user_options={**OPTIONS, "plan": "vm-removed"})
    spawner.load_state({})
    with pytest.raises(UnknownBackendError, match="plan 'vm-removed', which is no longer configured"):
        await spawner.delete_forever()
    assert fake().calls == []


async def test_never_started_instance_has_nothing_to_delete():
    spawner = make_spawner(user_options={})
    spawner.load_state({})
    await spawner.delete_forever()
    assert fake().calls == []


@pytest.mark.parametrize("cls, old", [
    (SandboxState, {"backend": "sandbox", "account": "visa-1", "uid": 1001, "pid": 7, "port": 5000, "started": 2.0}),
    (QemuState, {"backend": "qemu", "vm": "vm-1", "owner": "alice", "server_name": "x", "pid": 7, "port": 5000,
                 "overlay": "/s/disk.qcow2", "qmp": "/s/qmp.sock", "accel": "tcg", "warm": True, "image": "b1",
                 "started": 2.0, "snapshot": "s-1"}),
    (OpenStackState, {"backend": "openstack", "server_id": "u-1", "name": "visa-x-1", "owner": "alice",
                      "server_name": "x", "address": "10.0.0.5", "port": 8888}),
])
def test_backend_states_read_the_dicts_saved_today_and_write_the_same_keys(cls, old):
    state = cls.from_dict({**old, "plan": "p"})  # the spawner's own keys are ignored
    assert {k: v for k, v in state.to_dict().items() if k in old} == old
    assert cls.from_dict(state.to_dict()) == state


def test_a_state_with_a_wrong_type_is_refused_with_the_field_named():
    with pytest.raises(StateError, match="pid='soon'"):
        SandboxState.from_dict({"pid": "soon"})
    with pytest.raises(StateError, match="no 'backend'"):
        InstanceIdentity.from_dict({"owner": "alice", "server_name": "x"})


# -- plans: checked once, when configured --------------------------------------------------------
def test_a_bad_plan_is_refused_at_configuration_with_the_entry_named():
    bad = [*PLANS, {"id": "vm", "display_name": "VM", "backend": "qemu", "cpus": 1, "memory_mb": 512}]
    with pytest.raises(TraitError, match=r"plan #3 \(vm\): unknown backend 'qemu'"):
        make_spawner(plans=bad)
    config = Config()
    config.VisaSpawner.plans = [{"id": "tiny", "display_name": "Tiny", "backend": "sandbox", "cpus": 1,
                                 "memory_mb": 64}]
    with pytest.raises(ValueError, match=r"plan #1 \(tiny\): cpus must be > 0 and memory_mb >= 128"):
        check_plans(config)
    assert [p.id for p in check_plans(Config())] == ["sandbox-small", "sandbox-large"]


async def test_start_does_not_parse_the_plans_again(monkeypatch):
    spawner = make_spawner()
    monkeypatch.setattr(spawner_module, "parse_plans", lambda *a, **k: pytest.fail("plans parsed at spawn"))
    await start_and_watch(spawner)
    assert [p.id for p in spawner.plan_catalogue()] == ["fake-small", "other"]
