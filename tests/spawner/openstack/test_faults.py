"""Faults, many of them: real quota refusals, real ERROR states (Nova reset-state), and 5xx
answers, lost replies, latency and hangs from the proxy in front of the real services.

The 200-spawn storm drives the backend directly (high concurrency, stand-in instances) so it
stays cheap; 20 more go through a real hub to check the reason in the progress API end to end.
"""
from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter

import pytest

from tests.hubtools import Browserless
from tests.spawner.openstack import lab
from tests.spawner.openstack.boot_emulator import BootEmulator, wait_until
from tests.spawner.openstack.hubrun import make_hub, progress_events, spawn
from tests.spawner.openstack.support import Progress, make_backend, new_hub_id, spec
from visa_spawner.backends.base import BackendError
from visa_spawner.backends.openstack.model import hub_tag, owner_of

pytestmark = [pytest.mark.openstack, pytest.mark.asyncio(loop_scope="session")]
READABLE = {"quota", "capacity", "server-error", "cloud-unavailable", "boot-timeout", "build-timeout", "vanished"}


def storm(faults) -> None:
    faults.error_before, faults.error_after, faults.latency, faults.latency_s = 0.05, 0.04, 0.1, 0.3
    faults.hang, faults.hang_s = 0.004, 7.0


class ErrorInjector:
    """Real cloud faults at random moments: puts a random ACTIVE server of the hub (of those
    `target(server)` accepts, if given) into ERROR (admin reset-state), and every `quota_every`
    ticks drops the project's instance quota to 0 for one tick (real quota refusals), then lifts it
    again."""

    def __init__(self, tag: str, every: float, limit: int, quota_every: int = 0, target=None) -> None:
        self.tag, self.every, self.limit, self.done = tag, every, limit, 0
        self.target = target or (lambda server: True)
        self.quota_every, self.quota_drops = quota_every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        admin, rnd, tick, quota_down = lab.connect("lab"), random.Random(7), 0, False
        while not self._stop.wait(self.every):
            tick += 1
            try:
                if quota_down:
                    lab.set_instance_quota(admin, -1)
                    quota_down = False
                elif self.quota_every and tick % self.quota_every == 0:
                    lab.set_instance_quota(admin, 0)
                    quota_down, self.quota_drops = True, self.quota_drops + 1
                active = [s for s in lab.servers_with_tag(admin, self.tag)
                          if s.status == "ACTIVE" and self.target(s)]
                if active and self.done < self.limit:
                    admin.compute.reset_server_state(rnd.choice(active).id, "error")
                    self.done += 1
            except Exception:
                pass
        if quota_down:
            lab.set_instance_quota(admin, -1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)


def slow_boot(server) -> bool:
    """Every 10th spawn's VM boots slowly (20 s): the ERROR states are put on these, so each one
    lands while its spawn waits for the boot, as a VM failing during its boot does. (A random
    ACTIVE server was most often one whose spawn had already finished, about to be stopped:
    stand-ins phone home within a second of ACTIVE, so how many of the ERRORs met a spawn in
    progress, and whether 'server-error' was seen at all, was chance: 0 to 2 of 8 in runs.)"""
    return int(owner_of(server.metadata or {})[1].lstrip("s") or -1) % 10 == 5


async def test_200_spawns_under_faults_leak_nothing(openstack_lab, lab_admin, fault_proxy, faults):
    hub_id = new_hub_id()
    tag = hub_tag(hub_id)
    emulator = BootEmulator(lambda: lab.connect("lab"), tag, mode="standin",
                            boot_delay=lambda server: 20.0 if slow_boot(server) else 0.5,
                            board_loop=asyncio.get_running_loop()).start()
    backend = make_backend(hub_id, fault_proxy, max_concurrent_calls=16, request_timeout=5.0, call_attempts=6,
                           boot_timeout=60.0, build_timeout=120.0)
    sem = asyncio.Semaphore(30)
    outcomes: list = []

    async def one(i: int) -> None:
        async with sem:
            try:
                state = await backend.create(spec(owner=f"user{i % 9}", server=f"s{i}"), Progress())
            except BackendError as e:
                outcomes.append(e)
                return
            await backend.stop(state)
            outcomes.append("ok")

    storm(faults)
    t0 = time.monotonic()
    with ErrorInjector(tag, every=2.0, limit=8, quota_every=2, target=slow_boot) as injector:
        await asyncio.gather(*(one(i) for i in range(200)))
    faults.off()
    await asyncio.wait_for(backend.settle(), 120)  # the late sweeps of failed starts, then look
    emulator.stop()
    reasons = Counter(o if o == "ok" else o.reason for o in outcomes)
    print(f"\n200 spawns in {time.monotonic() - t0:.0f}s: {dict(reasons)}; proxy {fault_proxy.counts}; "
          f"{injector.done} servers put in ERROR, quota dropped {injector.quota_drops} times")
    leaked = lab.servers_with_tag(lab_admin, tag)
    assert not leaked, [(s.name, s.status) for s in leaked]
    assert len(outcomes) == 200
    assert reasons["ok"] >= 40 and reasons["quota"] >= 1 and reasons["server-error"] >= 1, reasons
    for failure in (o for o in outcomes if o != "ok"):
        assert failure.reason in READABLE, (failure.reason, failure.message)
        assert failure.message and "Traceback" not in failure.message and "Exception" not in failure.message
    assert fault_proxy.counts.get("error_before", 0) + fault_proxy.counts.get("error_after", 0) > 0


@pytest.mark.root
def test_20_faulted_spawns_through_the_hub_show_their_reason(openstack_lab, lab_admin, fault_proxy, faults):
    hub_id, names = new_hub_id(), [f"fault-{i}" for i in range(20)]
    lab.set_instance_quota(lab_admin, 12)
    hub = make_hub(hub_id, fault_proxy, interval=2, grace=10, request_timeout=5.0).start()
    emulator = BootEmulator(lambda: lab.connect("lab"), hub_tag(hub_id), mode="standin", boot_delay=1).start()
    try:
        assert Browserless(hub, "admin", "admin-demo").logged_in
        storm(faults)
        with ErrorInjector(hub_tag(hub_id), every=1.0, limit=2):
            for name in names:
                assert spawn(hub, "admin", name).status_code in (201, 202)
            servers = lambda: {n: m for n, m in hub.api("GET", "/users/admin?include_stopped_servers=1")  # noqa
                               .json()["servers"].items() if n}
            wait_until(lambda: not any(m.get("pending") for m in servers().values()), 300, "spawns settle")
        faults.off()
        failed = [n for n, m in servers().items() if not m.get("ready")]
        reasons, stopped_while_running = [], []
        for name in failed:
            events = progress_events(hub, "admin", name, timeout=30)
            if events and events[-1].get("http") == 404:
                # JupyterHub keeps a spawner's progress only when its *spawn* failed: this one came
                # up, then an injected ERROR state made poll() report it stopped, and the hub
                # stopped it. Not a failed spawn; it must still have no server left (checked below).
                stopped_while_running.append(name)
                continue
            assert events and events[-1].get("failed"), (name, events)
            message = events[-1]["message"]
            assert message.startswith("Spawn failed: ") and "Traceback" not in message, message
            assert len(message) > 30, message
            reasons.append(message)
        print(f"\n20 spawns through the hub: {20 - len(failed)} ready, {len(failed)} not ready "
              f"({len(stopped_while_running)} of them stopped while running):",
              *sorted(set(m[:110] for m in reasons)), sep="\n  ")
        assert reasons, "the faults (quota 12 for 20 spawns) should have failed some spawns"
        assert any("quota" in m for m in reasons), reasons
        for name in names:
            if name not in failed:
                hub.stop_server("admin", name, timeout=120)
        # failed starts cleaned up after themselves; a create that completed in Nova after its
        # client timed out is swept (late sweep / reconciler): nothing may remain
        wait_until(lambda: not lab.servers_with_tag(lab_admin, hub_tag(hub_id)), 90, "no server left")
    finally:
        faults.off()
        lab.set_instance_quota(lab_admin, -1)
        emulator.stop()
        hub.stop()
        lab.delete_all(lab_admin, hub_tag(hub_id))
