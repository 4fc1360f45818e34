"""Classroom on OpenStack: 100 participants on the lab cloud, servers built ahead versus on demand.

Issue 19's benchmark, OpenStack part (`bench/classroom.py --part openstack`). The project's lab
cloud (real Keystone, Nova with the fake driver, Glance, Neutron) and a real hub
(tests/spawner/openstack/pool_hub_config.py: a server `course-<pool>` adopts from pool `<pool>`).
The fake hypervisor boots nothing: the boot emulator's stand-ins play each VM after `--boot-delay`
seconds (a real analysis VM boots in 20-60 s), phone home and answer HTTP as Jupyter would.

Phase 1 fills a pool of N servers, then starts the class as the training service does (8
participants at a time, their start requests at least `--start-interval` s apart:
visa_training.pacing): each participant's course instance adopts a pooled server. Phase 2 starts
the same class on other accounts with servers built on demand. Measured per participant: seconds
from the class start until their Lab URL answers 200 through the hub's proxy. Target: with the
pool, all N within 60 s. The hub API's latency is probed throughout.

    .venv/bin/python bench/classroom.py --part openstack [--participants 100] [--boot-delay 20]
    .venv/bin/python -m bench.classroom_openstack [--pool-only] [--db postgresql|sqlite] [--loop-watch MS]
        [--start-interval S]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import threading
import time

import requests

from bench.api_probe import ApiProbe
from bench.classroom import POOL, summary
from tests.authenticator.services import PostgresCluster
from tests.hubtools import wait_for
from tests.spawner.openstack import lab
from tests.spawner.openstack.boot_emulator import BootEmulator
from tests.spawner.openstack.hubrun import make_hub, progress_events
from tests.spawner.openstack.support import new_hub_id
from visa_spawner.backends.openstack.model import hub_tag
from visa_training.pacing import DEFAULT_CONCURRENCY, DEFAULT_INTERVAL, StartSpacing

CONFIG = lab.REPO / "bench" / "classroom_openstack_hub_config.py"
BODY = {"plan": "openstack-small", "proposal": "P-2021-007", "screen": "1280x720", "keyboard": "us"}


class ThreadSpacing:
    """The training service's start spacing, for the bench's threads."""

    def __init__(self, interval: float) -> None:
        self.spacing, self.lock = StartSpacing(interval), threading.Lock()

    def wait(self) -> None:
        with self.lock:
            delay = self.spacing.reserve(time.monotonic())
        time.sleep(delay)


def start_one(hub, user: str, server: str, t0: float, spacing: ThreadSpacing) -> float | None:
    """Seconds from the class start until the participant's Lab answers through the proxy."""
    spacing.wait()
    try:
        r = hub.api("POST", f"/users/{user}/servers/{server}", json=BODY)
        assert r.status_code in (201, 202), f"{r.status_code} {r.text[:200]}"
        events = progress_events(hub, user, server, timeout=600)
        assert events and events[-1].get("ready"), f"spawn failed: {events[-1:]}"
        lab_page = requests.get(f"{hub.url}/user/{user}/{server}/lab", timeout=30,
                                headers={"Authorization": f"token {hub.token}"})
        assert lab_page.status_code == 200, f"Lab answered {lab_page.status_code}"
        return time.perf_counter() - t0
    except Exception as e:  # reported, not fatal: the others go on
        print(f"  {user}: {type(e).__name__}: {str(e)[:300]}", flush=True)
        return None


def run_class(hub, prefix: str, server: str, count: int, interval: float) -> tuple[dict, dict]:
    users = [f"{prefix}{i:03d}" for i in range(count)]
    spacing = ThreadSpacing(interval)
    probe = ApiProbe(f"{hub.url}/hub/api/users/{users[0]}", hub.token).start()
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(DEFAULT_CONCURRENCY) as pool:
        times = [t for t in pool.map(lambda u: start_one(hub, u, server, t0, spacing), users) if t is not None]
    api = probe.stop()
    return {**summary(times), "failed": count - len(times), "all_in_s": round(max(times), 1) if times else None}, api


def make_users(hub, prefix: str, count: int) -> None:
    r = hub.api("POST", "/users", json={"usernames": [f"{prefix}{i:03d}" for i in range(count)]})
    assert r.status_code == 201, r.text[:300]


def clear(hub, prefix: str, server: str, count: int) -> None:
    for i in range(count):
        hub.api("DELETE", f"/users/{prefix}{i:03d}/servers/{server}", json={"remove": True})
    wait_for(lambda: all(hub.server_model(f"{prefix}{i:03d}", server) is None for i in range(count)),
             900, "the phase's instances deleted", interval=2)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=100)
    parser.add_argument("--boot-delay", type=float, default=20, help="seconds an emulated VM takes to boot")
    parser.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql",
                        help="the hub's database: PostgreSQL as in production (default), or a SQLite file")
    parser.add_argument("--loop-watch", type=int, default=0, metavar="MS",
                        help="log the hub loop's stack when it runs no callback for MS ms (bench/loop_watch.py)")
    parser.add_argument("--pool-only", action="store_true", help="skip phase 2 (servers built on demand)")
    parser.add_argument("--start-interval", type=float, default=DEFAULT_INTERVAL, metavar="S",
                        help="seconds between two start requests (the training service's default; 0: unspaced)")
    args = parser.parse_args(argv)
    started = lab.up()
    admin = lab.connect("lab")
    lab.prepare(admin)
    lab.set_instance_quota(admin, -1)  # 2N servers at the peak (pool refills during the class)
    hub_id = new_hub_id()
    pg = PostgresCluster().start() if args.db == "postgresql" else None
    env = {"VISA_BENCH_HUB_DB_URL": pg.create_database("jupyterhub")} if pg else {}
    if args.loop_watch:
        env["VISA_BENCH_LOOP_WATCH"] = str(args.loop_watch)
    hub = make_hub(hub_id, config=CONFIG, interval=60, grace=900, build_timeout=600, boot_timeout=600, env=env)
    hub.start()
    emulator = BootEmulator(lambda: lab.connect("lab"), hub_tag(hub_id), mode="standin",
                            boot_delay=args.boot_delay).start()
    n = args.participants
    report: dict = {"participants": n, "boot_delay_s": args.boot_delay, "hub_db": args.db,
                    "class_concurrency": DEFAULT_CONCURRENCY, "start_interval_s": args.start_interval}
    try:
        make_users(hub, "p", n)
        make_users(hub, "q", n)
        t0 = time.perf_counter()
        r = hub.api("PUT", f"/visa/pools/{POOL}", json={"plan": BODY["plan"], "proposal": BODY["proposal"], "size": n})
        assert r.status_code == 200, r.text
        wait_for(lambda: (lambda s: s["ready"] == n and not s["starting"])(
            hub.api("GET", f"/visa/pools/{POOL}").json()), 1800, "the pool filled", interval=2)
        report["pool_fill_s"] = round(time.perf_counter() - t0, 1)
        print(f"openstack: pool of {n} ready in {report['pool_fill_s']} s", flush=True)
        report["with_pool"], report["api_with_pool"] = run_class(hub, "p", f"course-{POOL}", n, args.start_interval)
        print("openstack with pool", report["with_pool"], report["api_with_pool"], flush=True)
        assert hub.api("DELETE", f"/visa/pools/{POOL}").status_code == 204
        clear(hub, "p", f"course-{POOL}", n)
        if not args.pool_only:
            report["on_demand"], report["api_on_demand"] = run_class(hub, "q", "plain", n, args.start_interval)
            print("openstack on demand", report["on_demand"], report["api_on_demand"], flush=True)
            clear(hub, "q", "plain", n)
        if args.loop_watch:
            report["loop_stalls"] = hub.log_path.read_text(errors="replace").count("Loop watch:")
            report["hub_log"] = str(hub.log_path)
        report["target_all_in_60s"] = bool(report["with_pool"].get("all_in_s") is not None
                                           and report["with_pool"]["failed"] == 0
                                           and report["with_pool"]["all_in_s"] <= 60)
        print(json.dumps(report, indent=1), flush=True)
        return report
    finally:
        emulator.stop()
        hub.stop()
        lab.delete_all(admin, hub_tag(hub_id), timeout=600)
        if pg:
            pg.stop()
        if started:
            lab.down()


if __name__ == "__main__":
    main()
