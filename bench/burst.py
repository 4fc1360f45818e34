"""Burst: 100 spawns requested at once through the hub, on the real lab cloud, vs a plain
openstacksdk baseline creating the same 100 servers concurrently, in the same run.

Both sides get the same emulated boot (default 20 s after the server is ACTIVE). The hub side's
instances are the boot emulator's tiny stand-ins (they phone home the real stages over HTTP and
answer HTTP on their own loopback address): the bench measures the control plane (hub, backend,
cloud), not Jupyter's start-up. Prints the ratio and the hub API's p50/p99 latency during the burst.

    .venv/bin/python bench/burst.py [--n 100] [--boot 20]
"""
from __future__ import annotations

import argparse
import base64
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from tests.hubtools import Browserless  # noqa: E402
from tests.spawner.openstack import lab  # noqa: E402
from tests.spawner.openstack.boot_emulator import BootEmulator, wait_until  # noqa: E402
from tests.spawner.openstack.hubrun import LatencyProbe, make_hub, spawn  # noqa: E402
from tests.spawner.openstack.support import new_hub_id  # noqa: E402
from visa_spawner.backends.openstack.model import hub_tag  # noqa: E402


def baseline(n: int, boot: float, workers: int) -> float:
    """Plain openstacksdk: n concurrent creates, wait ACTIVE, then the same emulated boot."""
    tag = "visa-bench-baseline"
    admin, demo = lab.connect("lab"), lab.connect("lab-demo")
    flavor, image = admin.compute.find_flavor("visa.small"), admin.image.find_image(lab.IMAGE)
    user_data = base64.b64encode(b"#cloud-config\n{}\n").decode()
    lab.delete_all(admin, tag)  # what an interrupted earlier run left
    t0 = time.perf_counter()

    def status(conn, server_id: str) -> str:
        try:  # the loaded lab drops connections now and then: a script would retry too
            return conn.compute.get_server(server_id).status
        except Exception:
            return "?"

    def one(i: int) -> float:
        conn = demo  # one authenticated connection shared by the threads, as a script would
        for attempt in range(5):
            try:
                s = conn.compute.create_server(name=f"bench-{i}", flavor_id=flavor.id, image_id=image.id,
                                               networks="none", tags=[tag], user_data=user_data)
                break
            except Exception:
                time.sleep(1 + attempt)
        interval = 0.2
        while status(conn, s.id) != "ACTIVE":
            time.sleep(interval)
            interval = min(interval * 1.5, 3.0)
        time.sleep(boot)  # the emulated boot
        return time.perf_counter() - t0

    with ThreadPoolExecutor(workers) as pool:
        elapsed = max(pool.map(one, range(n)))
    print(f"baseline (openstacksdk, {n} concurrent, {boot:g} s boot): {elapsed:.1f} s", flush=True)
    lab.delete_all(admin, tag)
    return elapsed


def through_hub(n: int, boot: float) -> tuple[float, LatencyProbe]:
    hub_id = new_hub_id()
    # the lab takes minutes to make 100 servers ACTIVE: the hub gets the time the baseline gets
    hub = make_hub(hub_id, max_concurrent_calls=16, build_timeout=900, boot_timeout=300).start()
    emulator = BootEmulator(lambda: lab.connect("lab"), hub_tag(hub_id), mode="standin", boot_delay=boot).start()
    try:
        assert Browserless(hub, "admin", "admin-demo").logged_in
        names = [f"b{i}" for i in range(n)]

        def count() -> tuple[int, int]:
            """(ready, ended): an instance that is neither ready nor pending has failed."""
            servers = hub.api("GET", "/users/admin").json()["servers"]
            ready = sum(1 for name in names if servers.get(name, {}).get("ready"))
            return ready, sum(1 for name in names if not servers.get(name, {}).get("pending"))

        with LatencyProbe(hub) as probe:
            t0 = time.perf_counter()
            with ThreadPoolExecutor(16) as pool:
                codes = list(pool.map(lambda name: spawn(hub, "admin", name).status_code, names))
            assert all(c in (201, 202) for c in codes), codes
            wait_until(lambda: count()[1] == n, 1300, f"{n} spawns ended", interval=0.5)
            elapsed = time.perf_counter() - t0
        ready, _ = count()
        if ready < n:
            sys.exit(f"only {ready} of {n} instances became ready: see {hub.log_path}")
        return elapsed, probe
    finally:
        emulator.stop()
        hub.stop()
        lab.delete_all(lab.connect("lab"), hub_tag(hub_id))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--boot", type=float, default=20.0)
    ap.add_argument("--workers", type=int, default=100, help="baseline threads (concurrent creates)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the hub and the lab
    started = lab.up() if not lab.answering() else False
    try:
        admin = lab.connect("lab")
        lab.prepare(admin)
        lab.set_instance_quota(admin, -1)
        base = baseline(args.n, args.boot, args.workers)
        hub_s, probe = through_hub(args.n, args.boot)
        print(f"through the hub ({args.n} spawns at once):            {hub_s:.1f} s")
        print(f"ratio hub/baseline: {hub_s / base:.2f}x   (target <= 1.3x, goal 1.15x)")
        print(f"hub API latency during the burst: p50 {probe.median() * 1000:.0f} ms, "
              f"p99 {probe.quantile(0.99) * 1000:.0f} ms over {len(probe.samples)} requests (target p99 <= 200 ms)")
    finally:
        if started:
            lab.down()


if __name__ == "__main__":
    main()
