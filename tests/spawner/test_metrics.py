"""Hub-side metrics over the fake backend: spawn durations, failures by reason, stops, lost instances,
instances by state/plan/backend; the capacity report and GPU plans.

Counters are process-wide (prometheus_client's default registry, as on the hub): each test reads a
sample before and after what it does.
"""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
from jupyterhub.spawner import SpawnException
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from tests.spawner.test_spawner import FakeBackend, fake, fresh_backends, make_spawner, start_and_watch  # noqa: F401
from visa_spawner import metrics
from visa_spawner.backends.base import BackendError, InstanceSpec, InstanceStatus, Plan, ProgressCallback
from visa_spawner.capacity import backend_capacity, capacity_report

GPU_PLANS = [{"id": "fake-gpu", "display_name": "GPU box", "backend": "fake", "cpus": 1, "memory_mb": 512, "gpus": 1}]
GPU_OPTIONS = {"proposal": "P-1", "plan": "fake-gpu", "screen": "1920x1080", "keyboard": "fr"}


class ScriptedBackend(FakeBackend):
    """The fake backend, but `create` raises `failure` (or waits for ever) and capacity is set by the test."""

    failure: BaseException | None = None
    hang = False
    free_gpus = 0

    async def create(self, spec: InstanceSpec, progress: ProgressCallback) -> dict:
        if self.hang:
            await asyncio.Event().wait()
        if self.failure is not None:
            raise self.failure
        return await super().create(spec, progress)

    async def capacity(self) -> dict:
        return {"gpus_free": self.free_gpus}


SCRIPTED = {"fake": f"{__name__}.ScriptedBackend", "sandbox": f"{__name__}.ScriptedBackend"}


@pytest.fixture(autouse=True)
def scripted_reset():
    ScriptedBackend.clear_instance()
    yield
    ScriptedBackend.clear_instance()


def scripted(**attrs: Any) -> ScriptedBackend:
    backend = ScriptedBackend.instance()
    for name, value in attrs.items():
        setattr(backend, name, value)
    return backend


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def failures(reason: str, plan: str = "fake-small") -> float:
    return sample("visa_spawn_failures_total", backend="fake", plan=plan, reason=reason)


async def test_a_start_is_timed_in_the_histogram_of_its_backend_and_plan():
    before = sample("visa_spawn_duration_seconds_count", backend="fake", plan="fake-small")
    await start_and_watch(make_spawner())
    assert sample("visa_spawn_duration_seconds_count", backend="fake", plan="fake-small") == before + 1
    assert sample("visa_spawn_duration_seconds_bucket", backend="fake", plan="fake-small", le="0.5") >= before + 1


@pytest.mark.parametrize("raw, reason", [("capacity", "capacity"), ("boot-timeout", "timeout"),
                                         ("cloud-unavailable", "cloud"), ("something-new", "backend")])
async def test_a_backend_failure_is_counted_under_its_reason_and_not_timed(raw, reason):
    scripted(failure=BackendError("No room", reason=raw))
    spawner = make_spawner(classes=SCRIPTED)
    durations = sample("visa_spawn_duration_seconds_count", backend="fake", plan="fake-small")
    before = failures(reason)
    with pytest.raises(SpawnException, match="No room"):
        await spawner.start()
    assert failures(reason) == before + 1
    assert sample("visa_spawn_duration_seconds_count", backend="fake", plan="fake-small") == durations


async def test_a_start_cancelled_by_the_hubs_start_timeout_counts_as_timeout():
    scripted(hang=True)
    before = failures("timeout")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(make_spawner(classes=SCRIPTED).start(), 0.2)  # as User.spawn does
    assert failures("timeout") == before + 1


async def test_an_unexpected_exception_counts_as_error():
    scripted(failure=RuntimeError("bug"))
    before = failures("error")
    with pytest.raises(RuntimeError):
        await make_spawner(classes=SCRIPTED).start()
    assert failures("error") == before + 1


async def test_a_plan_nobody_configured_is_labelled_other_never_as_typed():
    spawner = make_spawner(user_options={**GPU_OPTIONS, "plan": "<script>x</script>"})
    before = sample("visa_spawn_failures_total", backend="other", plan="other", reason="request")
    with pytest.raises(SpawnException, match="not available to you"):
        await spawner.start()
    assert sample("visa_spawn_failures_total", backend="other", plan="other", reason="request") == before + 1
    assert b"<script>" not in generate_latest(REGISTRY)


async def test_gpu_plan_is_refused_with_no_gpu_free_then_starts_when_one_is():
    scripted(free_gpus=0)
    spawner = make_spawner(classes=SCRIPTED, plans=GPU_PLANS, user_options=dict(GPU_OPTIONS))
    before = failures("request", plan="fake-gpu")
    with pytest.raises(SpawnException, match="GPU box.* no GPU free"):
        await spawner.start()
    assert failures("request", plan="fake-gpu") == before + 1
    assert ScriptedBackend.instance().calls == []
    assert [(p.id, why) for p, why in await spawner.plan_offer()] == [("fake-gpu", "no GPU free")]

    scripted(free_gpus=1)
    await start_and_watch(spawner)
    assert [c[0] for c in ScriptedBackend.instance().calls] == ["create"]
    assert [(p.id, why) for p, why in await spawner.plan_offer()] == [("fake-gpu", "")]


async def test_stop_and_a_vanished_instance_are_counted_per_backend():
    spawner = make_spawner()
    await start_and_watch(spawner)
    stops, lost = sample("visa_instance_stops_total", backend="fake"), sample("visa_instances_lost_total", backend="fake")
    assert await spawner.poll() is None
    assert sample("visa_instances_lost_total", backend="fake") == lost
    fake().answer = InstanceStatus.STOPPED  # e.g. the sandbox was killed behind the hub's back
    assert await spawner.poll() == 0
    assert sample("visa_instances_lost_total", backend="fake") == lost + 1
    await spawner.stop()
    assert sample("visa_instance_stops_total", backend="fake") == stops + 1


@pytest.mark.parametrize("raw, reason", [(None, "error"), ("", "error"), ("options", "request"), ("quota", "capacity"),
                                         ("no-qemu", "config"), ("vanished", "instance"), ("x" * 200, "backend")])
def test_failure_reasons_are_a_closed_set(raw, reason):
    assert metrics.failure_reason(raw) == reason
    assert reason in metrics.REASON_LABELS


PLAN_BACKENDS = {"small": "sandbox", "vm": "qemu"}
IDENTITY = {"identity": {"backend": "qemu", "owner": "a", "server_name": "s"}}


@pytest.mark.parametrize("record, row", [
    ((True, {"plan": "small"}, {}, False), ("running", "small", "sandbox")),
    ((False, {"plan": "vm"}, IDENTITY, False), ("stopped", "vm", "qemu")),
    ((True, {"plan": "vm"}, IDENTITY, True), ("pending", "vm", "qemu")),
    ((False, {"plan": "removed-plan"}, IDENTITY, False), ("stopped", "other", "qemu")),
    ((False, {"plan": "removed-plan"}, {}, False), ("stopped", "other", "other")),
    ((False, None, None, False), ("stopped", "other", "other")),
    ((True, {"plan": "small"}, {"identity": {"backend": "gone"}}, False), ("running", "small", "other")),
])
def test_instance_rows_from_hub_records(record, row):
    assert metrics.instance_rows([record], PLAN_BACKENDS, ["sandbox", "qemu"]) == [row]


def test_the_instances_gauge_counts_rows_by_state_plan_and_backend():
    registry = CollectorRegistry()
    rows = [("running", "small", "sandbox")] * 3 + [("stopped", "vm", "qemu")]
    registry.register(metrics.InstancesCollector(lambda: rows))
    assert registry.get_sample_value("visa_instances", {"state": "running", "plan": "small", "backend": "sandbox"}) == 3
    assert registry.get_sample_value("visa_instances", {"state": "stopped", "plan": "vm", "backend": "qemu"}) == 1
    rows.clear()
    assert registry.get_sample_value("visa_instances", {"state": "running", "plan": "small", "backend": "sandbox"}) is None


def test_outside_a_hub_the_instances_gauge_is_empty_not_an_error():
    assert metrics.hub_instance_rows() == []
    assert b"# TYPE visa_instances gauge" in generate_latest(REGISTRY)


# -- capacity ----------------------------------------------------------------------------------------
def test_capacity_report_per_backend_and_plan():
    plans = [Plan("small", "Small", "sandbox", 1, 512), Plan("gpu", "GPU", "sandbox", 1, 512, gpus=1),
             Plan("vm", "VM", "qemu", 2, 2048)]
    answers = {"sandbox": {"gpus_free": 0, "host": {"cpus": 2}}, "qemu": {"gpus_free": 0, "slots": {"max": 4, "used": 1}}}
    rows = [("running", "small", "sandbox"), ("stopped", "small", "sandbox"), ("pending", "vm", "qemu")]
    report = capacity_report(plans, answers, rows, disabled={"vm"})
    assert report["backends"]["sandbox"] == {"instances_running": 1, "instances": {"running": 1, "pending": 0, "stopped": 1},
                                             "gpus_free": 0, "host": {"cpus": 2}}
    assert report["backends"]["qemu"]["instances"] == {"running": 0, "pending": 1, "stopped": 0}
    assert [(p["id"], p["enabled"], p["available"], p["why"]) for p in report["plans"]] == [
        ("small", True, True, ""), ("gpu", True, False, "no GPU free"),
        ("vm", False, False, "disabled by the facility's administrators for now")]


class SlowOrBroken(FakeBackend):
    mode = "ok"

    async def capacity(self) -> dict:
        if self.mode == "slow":
            await asyncio.Event().wait()
        if self.mode == "broken":
            raise BackendError("The cloud is down", reason="cloud-unavailable")
        return {"slots": {"max": 1, "used": 0}}


@pytest.mark.parametrize("mode, expected", [
    ("ok", {"gpus_free": 0, "slots": {"max": 1, "used": 0}}),
    ("broken", {"gpus_free": 0, "error": "The cloud is down"}),
    ("slow", {"gpus_free": 0, "error": "no answer within 0.1 s"}),
])
async def test_a_backend_that_fails_or_hangs_is_reported_not_raised(mode, expected):
    backend = SlowOrBroken()
    backend.mode = mode
    assert await backend_capacity(backend, timeout=0.1) == expected


async def test_a_started_instance_whose_server_never_answers_counts_as_unreachable():
    spawner = make_spawner()
    await start_and_watch(spawner)
    before = failures("unreachable")
    spawner._waiting_for_response = True  # as User._wait_up when it gives up and stops the server
    await spawner.stop()
    assert failures("unreachable") == before + 1
    spawner._waiting_for_response = False
    await start_and_watch(spawner)
    await spawner.stop()  # a person's stop
    assert failures("unreachable") == before + 1


def test_openstack_quota_is_novas_absolute_limits():
    from types import SimpleNamespace

    from visa_spawner.backends.openstack.cloud import absolute_limits

    absolute = SimpleNamespace(instances=10, instances_used=3, total_cores=-1, total_cores_used=6, total_ram=51200,
                               total_ram_used=None)
    conn = SimpleNamespace(compute=SimpleNamespace(get_limits=lambda: SimpleNamespace(absolute=absolute)))
    assert absolute_limits(conn) == {"instances": {"limit": 10, "used": 3}, "cores": {"limit": -1, "used": 6},
                                      "ram_mb": {"limit": 51200, "used": 0}}


async def test_openstack_without_a_reachable_cloud_has_no_quota_and_says_why(tmp_path):
    from traitlets.config import Config

    from visa_spawner.backends.openstack.backend import OpenStackBackend

    config = Config()
    config.OpenStackBackend.auth = {"auth_url": "http://127.0.0.1:9/identity", "username": "u", "password": "p",
                                    "project_name": "p", "user_domain_name": "Default",
                                    "project_domain_name": "Default"}
    config.OpenStackBackend.clouds_yaml = str(tmp_path / "none.yaml")
    config.OpenStackBackend.retry_backoff = 0.01
    config.OpenStackBackend.request_timeout = 2
    answer = await OpenStackBackend(config=config).capacity()
    assert "quota" not in answer and answer["gpus_free"] == 0
    assert answer["quota_error"].startswith("The facility cloud"), answer
