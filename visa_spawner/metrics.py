"""Prometheus metrics of VISA instances, on the hub's own `/hub/metrics` (prometheus_client's default
registry, which JupyterHub serves behind the `read:metrics` scope).

- `visa_spawn_duration_seconds{backend,plan}`: successful `VisaSpawner.start` calls, from the
  request check to the backend's address (a sandbox in half a second, a TCG VM in minutes);
- `visa_spawn_failures_total{backend,plan,reason}`: failed starts, `reason` one of `REASON_LABELS`
  ("unreachable": started, but the hub gave up waiting for the server to answer);
- `visa_instances{state,plan,backend}`: every named server of the hub, counted at each scrape
  from the hub's own records (so stopped instances and every backend count, and a hub restart
  loses nothing);
- `visa_instance_stops_total{backend}` and `visa_instances_lost_total{backend}` (a poll found the
  instance gone while the hub thought it running).

Label values come from configuration (backend names, plan ids) or from the closed `REASONS`
set, never from a person's input: a plan id nobody configured is counted as "other".
"""
from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

#: from a sandbox (0.5 s) to a cold TCG virtual machine (up to the 10 min start timeout)
SPAWN_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 180, 300, 450, 600, 900)
STATES = ("running", "pending", "stopped")
OTHER = "other"

SPAWN_DURATION = Histogram(
    "visa_spawn_duration_seconds", "Duration of successful instance starts (VisaSpawner.start)",
    ["backend", "plan"], buckets=SPAWN_BUCKETS)
SPAWN_FAILURES = Counter(
    "visa_spawn_failures", "Instance starts that failed, by reason", ["backend", "plan", "reason"])
STOPS = Counter("visa_instance_stops", "Instances stopped (VisaSpawner.stop)", ["backend"])
LOST = Counter("visa_instances_lost", "Instances a poll found stopped while the hub had them running",
               ["backend"])

#: a failure's `reason` (BackendError / SpawnException) → the metric's closed set of reasons
REASONS = {
    "timeout": ("timeout", "boot-timeout", "build-timeout", "delete-timeout"),
    "capacity": ("capacity", "quota", "limits"),
    "request": ("options", "account"),  # refused as asked: quota, plan, proposal, GPU, disabled plan
    "config": ("config", "image", "no-qemu", "cloud-auth", "data"),
    "cloud": ("cloud-error", "cloud-unavailable"),
    "instance": ("exited", "instance-failed", "guest", "vanished", "no-address", "restore", "disk", "qemu",
                 "network"),
}
_REASON_OF = {raw: reason for reason, raws in REASONS.items() for raw in raws}
#: started, but its server never answered the hub within `Spawner.http_timeout`
UNREACHABLE = "unreachable"
#: every value the `reason` label can take
REASON_LABELS = (*REASONS, UNREACHABLE, "backend", "error")


def failure_reason(raw: str | None) -> str:
    """The metric's reason for a failure's own reason: "backend" for a backend's unknown label,
    "error" for an unexpected exception (no reason at all)."""
    if not raw:
        return "error"
    return _REASON_OF.get(raw, "backend")


@contextmanager
def observe_spawn(backend: str, plan: str) -> Iterator[None]:
    """Time one start: its duration on success, its reason on failure (then re-raised).

    A start cancelled by the hub (`Spawner.start_timeout`) counts as "timeout".
    """
    begin = time.perf_counter()
    try:
        yield
    except TimeoutError:
        SPAWN_FAILURES.labels(backend, plan, "timeout").inc()
        raise
    except BaseException as e:  # CancelledError: the hub's start_timeout cancels start()
        reason = "timeout" if type(e).__name__ == "CancelledError" else failure_reason(getattr(e, "reason", None))
        SPAWN_FAILURES.labels(backend, plan, reason).inc()
        raise
    SPAWN_DURATION.labels(backend, plan).observe(time.perf_counter() - begin)


#: one instance as the collector counts it: (state, plan, backend)
InstanceRow = tuple[str, str, str]


class InstancesCollector(Collector):
    """`visa_instances{state,plan,backend}`, counted at each scrape from `source()`."""

    def __init__(self, source: Callable[[], Iterable[InstanceRow]]) -> None:
        self.source = source

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("visa_instances", "VISA instances (named servers) by state, plan and backend",
                                 labels=["state", "plan", "backend"])

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The metric's name without counting: `register` then never calls `collect` (which would
        import the hub inside the registry's lock, and query a database that may not exist yet)."""
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        for (state, plan, backend), n in sorted(Tally(self.source()).items()):
            family.add_metric([state, plan, backend], n)
        yield family


def instance_rows(records: Iterable[tuple[Any, Any, Any, bool]], plan_backends: dict[str, str],
                  backends: Iterable[str]) -> list[InstanceRow]:
    """(state, plan, backend) of each hub record `(running, user_options, saved_state, pending)` (pure).

    The backend is the one the saved state names (it outlives a stop), else the plan's; plans and
    backends this hub does not configure are counted as "other".
    """
    known_backends = set(backends)
    rows = []
    for running, options, state, pending in records:
        plan = (options or {}).get("plan") if isinstance(options, dict) else None
        plan = plan if plan in plan_backends else OTHER
        identity = (state or {}).get("identity") if isinstance(state, dict) else None
        backend = identity.get("backend") if isinstance(identity, dict) else None
        backend = backend or plan_backends.get(plan, OTHER)
        backend = backend if backend in known_backends else OTHER
        rows.append(("pending" if pending else "running" if running else "stopped", plan, backend))
    return rows


_hub_plans: dict[str, Any] = {"backend_classes": {}, "check_plans": lambda config: []}


def bind_plans(backend_classes: dict[str, str], check_plans: Callable[[Any], list]) -> None:
    """Told by `visa_spawner.spawner` when it is imported, so this module never imports the
    spawner (no import cycle): the default backends and how the hub's plans are read."""
    _hub_plans.update(backend_classes=backend_classes, check_plans=check_plans)


def hub_instance_rows() -> list[InstanceRow]:
    """Every named server of the running hub (none outside a hub).

    One column query on the hub's own session, on its thread (the metrics handler calls this);
    "pending" comes from the spawners in memory (a spawn or stop in progress is not in the
    database).
    """
    from jupyterhub import orm
    from jupyterhub.app import JupyterHub

    if not JupyterHub.initialized():
        return []
    app = JupyterHub.instance()
    if getattr(app, "db", None) is None:
        return []
    try:
        plans = _hub_plans["check_plans"](app.config)
    except ValueError:
        plans = []
    pending = {(user.id, name) for user in app.users.values()
               for name, spawner in user.spawners.items() if spawner.pending}
    query = app.db.query(orm.Spawner.user_id, orm.Spawner.name, orm.Spawner.server_id, orm.Spawner.user_options,
                         orm.Spawner.state).filter(orm.Spawner.name != "")
    records = [(server_id is not None, options, state, (user_id, name) in pending)
               for user_id, name, server_id, options, state in query]
    backends = app.config.get("VisaSpawner", {}).get("backend_classes", _hub_plans["backend_classes"])
    return instance_rows(records, {p.id: p.backend for p in plans}, backends)


INSTANCES = InstancesCollector(hub_instance_rows)
REGISTRY.register(INSTANCES)
