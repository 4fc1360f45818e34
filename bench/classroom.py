"""Classroom: 30 participants log in over 60 s and reach Lab, with a warm pool and without, same run.

Issue 19's benchmark, sandbox part. One hub (bench/classroom_hub_config.py: the demo profile, a
password login for any name, `course-<pool>` servers adopting from the warm pool `<pool>`). For each
participant, an HTTP client (requests) logs in through the login form; the hub then starts their
course instance (here the bench asks the hub's REST API, as the seat and course pages do after a
login), and the client opens Lab through the hub's OAuth, as a browser does. Measured: login → the
Lab page answering 200, per participant, and its steps (`steps`: the login, the spawn from its
request to ready, Lab through the OAuth round trips). Phase 1 fills a pool of N and starts the class from it;
phase 2 (no pool) starts the same class on new accounts. A prober measures the hub API's latency
(`GET /hub/api/users/<a participant>`, every 0.25 s, from a process of its own: bench/api_probe.py)
throughout. Targets: with the pool p95 <= 3 s and
<= 0.3x without; hub API p99 <= 200 ms.

    .venv/bin/python bench/classroom.py [--part all|sandbox|openstack] [--participants 30] [--spread 60]
        [--os-participants 100] [--boot-delay 20]

The OpenStack part (100 participants on the lab cloud, servers built ahead versus on demand) is
bench/classroom_openstack.py.
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.api_probe import ApiProbe, percentile  # noqa: E402
from tests.hubtools import REPO, Browserless, Hub, demo_state, wait_for  # noqa: E402

CONFIG = Path(__file__).with_name("classroom_hub_config.py")
MATERIALS = REPO / "hub_config" / "demo" / "courses" / "python-neutron"
BODY = {"plan": "sandbox-small", "proposal": "P-2021-007"}
POOL = "class"


def summary(values: list[float]) -> dict:
    return {"n": len(values), "p50": round(statistics.median(values), 2), "p95": round(percentile(values, 95), 2),
            "max": round(max(values), 2)} if values else {"n": 0}


def wait_spawned(hub: Hub, client: Browserless, user: str, server: str, timeout: float = 600) -> None:
    """Follow the spawn's progress stream until it is ready, as the spawn-pending page does (one
    streaming request; polling the REST API would load the hub more than the class does)."""
    url = f"{hub.url}/hub/api/users/{user}/servers/{server}/progress"
    xsrf = next((c.value for c in client.s.cookies if c.name == "_xsrf" and c.path == "/hub/"), "")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with client.s.get(url, stream=True, timeout=timeout, headers={"X-XSRFToken": xsrf}) as r:
            if r.status_code == 400:  # not pending yet, or already ready
                if (hub.server_model(user, server) or {}).get("ready"):
                    return
                time.sleep(0.2)  # the spawn starts a few ms after the POST: ask again shortly
                continue
            assert r.status_code == 200, f"{user}: progress {r.status_code}"
            for line in r.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    event = json.loads(line[5:])
                    if event.get("ready"):
                        return
                    assert not event.get("failed"), f"{user}: spawn failed: {event.get('message')}"
    raise TimeoutError(f"{user}/{server} not ready in {timeout:g} s")


STEPS = ("login", "spawn", "lab")


def participant(hub: Hub, user: str, server: str, delay: float, results: dict, steps: dict) -> None:
    time.sleep(delay)  # the bench's own schedule of arrivals (not a wait on the system under test)
    t0 = time.perf_counter()
    marks = [t0]
    try:
        client = Browserless(hub, user, "bench")
        assert client.logged_in, f"{user}: login failed"
        marks.append(time.perf_counter())
        r = hub.api("POST", f"/users/{user}/servers/{server}", json=BODY)
        assert r.status_code in (201, 202), f"{user}: {r.status_code} {r.text[:200]}"
        wait_spawned(hub, client, user, server)
        marks.append(time.perf_counter())
        lab = client.instance_get(user, server, "lab")
        assert lab.status_code == 200 and "/lab" in lab.url, f"{user}: Lab answered {lab.status_code} at {lab.url}"
        marks.append(time.perf_counter())
        results[user] = marks[-1] - t0
        steps[user] = [b - a for a, b in itertools.pairwise(marks)]
    except Exception as e:  # reported, not fatal: the other participants go on
        results[user] = None
        print(f"  {user}: {type(e).__name__}: {str(e)[:300]}", file=sys.stderr, flush=True)


def run_class(hub: Hub, prefix: str, server: str, count: int, spread: float) -> tuple[dict, dict]:
    results: dict[str, float | None] = {}
    steps: dict[str, list[float]] = {}
    probe = ApiProbe(f"{hub.url}/hub/api/users/{prefix}00", hub.token).start()
    threads = [threading.Thread(target=participant,
                                args=(hub, f"{prefix}{i:02d}", server, i * spread / count, results, steps))
               for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    api = probe.stop()
    times = [v for v in results.values() if v is not None]
    by_step = {name: summary([s[i] for s in steps.values()]) for i, name in enumerate(STEPS)}
    return {**summary(times), "failed": count - len(times), "steps": by_step}, api


def clear(hub: Hub, prefix: str, server: str, count: int) -> None:
    """Delete the phase's instances (their CPU and memory would weigh on the next phase)."""
    for i in range(count):
        hub.api("DELETE", f"/users/{prefix}{i:02d}/servers/{server}", json={"remove": True})
    wait_for(lambda: all(hub.server_model(f"{prefix}{i:02d}", server) is None for i in range(count)),
             600, "the phase's instances deleted", interval=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=30)
    parser.add_argument("--spread", type=float, default=60, help="seconds over which participants log in")
    parser.add_argument("--part", choices=("all", "sandbox", "openstack"), default="all")
    parser.add_argument("--os-participants", type=int, default=100, help="participants of the OpenStack part")
    parser.add_argument("--boot-delay", type=float, default=20, help="seconds an emulated OpenStack VM boots")
    args = parser.parse_args()
    if args.part in ("all", "sandbox"):
        sandbox_part(args)
    if args.part in ("all", "openstack"):
        from bench import classroom_openstack
        classroom_openstack.main(["--participants", str(args.os_participants), "--boot-delay", str(args.boot_delay)])


def sandbox_part(args: argparse.Namespace) -> None:
    states = demo_state()
    hub = Hub(next(states), config=CONFIG).start()
    report: dict = {"participants": args.participants, "spread_s": args.spread}
    try:
        t0 = time.perf_counter()
        r = hub.api("PUT", f"/visa/pools/{POOL}", json={**BODY, "materials": str(MATERIALS),
                                                          "size": args.participants})
        assert r.status_code == 200, r.text
        wait_for(lambda: (lambda s: s["ready"] == args.participants and not s["starting"])(
            hub.api("GET", f"/visa/pools/{POOL}").json()), 900, "the pool filled", interval=1)
        report["pool_fill_s"] = round(time.perf_counter() - t0, 1)
        print(f"pool of {args.participants} ready in {report['pool_fill_s']} s", flush=True)
        # the pool refills after each adoption during the class (at its low CPU weight): the worst case
        report["with_pool"], report["api_with_pool"] = run_class(
            hub, "p", f"course-{POOL}", args.participants, args.spread)
        print("with pool", report["with_pool"], report["api_with_pool"], flush=True)
        assert hub.api("DELETE", f"/visa/pools/{POOL}").status_code == 204
        clear(hub, "p", f"course-{POOL}", args.participants)
        report["without_pool"], report["api_without_pool"] = run_class(
            hub, "q", "plain", args.participants, args.spread)
        print("without pool", report["without_pool"], report["api_without_pool"], flush=True)
        clear(hub, "q", "plain", args.participants)
        with_p95, without_p95 = report["with_pool"].get("p95"), report["without_pool"].get("p95")
        if with_p95 and without_p95:
            report["p95_ratio"] = round(with_p95 / without_p95, 2)
        print(json.dumps(report, indent=1))
    finally:
        try:
            hub.stop_all_servers()
        finally:
            hub.stop()
            next(states, None)


if __name__ == "__main__":
    main()
