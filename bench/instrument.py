"""Instrument control through the gateway versus straight to the IOC (issue 18), in one run.

Real processes: the demo's D11 and IN5 IOCs (`visa-instrument-ioc`, PVA faces), the gateway
(`visa-instrument-gateway`) reading a hub database written with JupyterHub's own ORM (20 running
instances of alice's P-2026-011, each with its `instrument_address`), and p4p clients. A client
reaches the gateway from its instance's address through a relay bound to that address, as a
sandbox's bridge does; the direct path gets the same relay, so the ratio is the gateway's own cost.

Prints:
- write: `D11:TEMP:SP` puts (wait for completion) via the gateway and direct, p50/p95, ratio;
- change → client: a put made on the IOC directly until a monitor through the gateway (and one
  direct) sees the new value, p50/p95;
- load: 20 instances monitoring every PV of D11 and IN5 (49) while a motor moves: gateway and
  IOC CPU (% of one core) over the window.

The browser leg (value drawn in the PyDM panel through the hub) is `bench/instrument_browser.py`.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
from p4p.client.thread import Context  # noqa: E402

from tests.instruments.gateway_support import Relay, start_ioc  # noqa: E402
from tests.support import free_port, wait_for  # noqa: E402
from visa_instruments.gateway import tcp_client_conf  # noqa: E402
from visa_instruments.model import devices_of  # noqa: E402

CATALOGUE = REPO / "hub_config" / "demo" / "catalogue.yaml"
GATEWAY = [sys.executable, "-m", "visa_instruments.gateway"]
FIELDS = ("VAL", "RBV", "DMOV", "VELO", "DESC")
OTHER_PVS = ("TEMP:SP", "TEMP:RBV", "TEMP:SETTLED", "SHUTTER", "DET:RATE", "RUN:START", "RUN:STOP",
             "RUN:STATE", "RUN:NUMBER", "RUN:PROPOSAL", "RUN:MESSAGE", "RUN:FILE")


def all_pvs(instrument: str) -> list[str]:
    motors = [f"{instrument}:{m.name}.{f}" for m in devices_of(instrument).motors for f in FIELDS]
    return motors + [f"{instrument}:{p}" for p in OTHER_PVS]


def write_hub_db(path: Path, instances: int) -> list[str]:
    """A hub database with `instances` running servers of alice on P-2026-011; their addresses."""
    from jupyterhub import orm

    session = orm.new_session_factory(f"sqlite:///{path}")()
    alice = orm.User(name="alice")
    session.add(alice)
    session.commit()
    addresses = []
    for i in range(instances):
        address = f"127.77.1.{i + 1}"
        spawner = orm.Spawner(user=alice, name=f"bench-{i}", server=orm.Server(),
                              user_options={"proposal": "P-2026-011", "instruments": ["D11"]},
                              state={"instrument_address": address})
        session.add(spawner)
        addresses.append(address)
    session.commit()
    session.close()
    return addresses


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(0.95 * (len(ordered) - 1))] * 1000


def client_via(source: str, port: int, relays: list[Relay]) -> Context:
    """A TCP-only p4p client whose connections reach 127.0.0.1:`port` from `source`."""
    relay = Relay("127.78." + source.split(".", 2)[2], source, ("127.0.0.1", port))
    relays.append(relay)
    return Context("pva", conf=tcp_client_conf([relay.address]), useenv=False)


def time_puts(ctx: Context, n: int) -> list[float]:
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        ctx.put("D11:TEMP:SP", 280.0 + (i % 20), wait=True, timeout=10)
        samples.append(time.perf_counter() - t0)
    return samples


def time_changes(writer: Context, watcher: Context, n: int) -> list[float]:
    """Put on one context; time until `watcher`'s monitor delivers exactly that value."""
    seen: dict[float, float] = {}
    arrived = threading.Condition()

    def update(value) -> None:
        with arrived:
            seen[round(float(value), 6)] = time.perf_counter()
            arrived.notify_all()

    subscription = watcher.monitor("D11:TEMP:SP", update)
    samples = []
    try:
        for i in range(n):
            target = round(300.0 + i * 0.01, 6)
            t0 = time.perf_counter()
            writer.put("D11:TEMP:SP", target, wait=False)
            with arrived:
                if not arrived.wait_for(lambda t=target: t in seen, timeout=10):
                    raise TimeoutError(f"no monitor update for {target}")
            samples.append(seen[target] - t0)
    finally:
        subscription.close()
    return samples


def cpu_percent(process: psutil.Process, seconds: float, during=None) -> float:
    before = process.cpu_times()
    t0 = time.monotonic()
    if during:
        during(seconds)
    else:
        time.sleep(seconds)
    after = process.cpu_times()
    return 100 * ((after.user - before.user) + (after.system - before.system)) / (time.monotonic() - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=200)
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--load-seconds", type=float, default=30.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="visa-bench-instrument-"))
    *addresses, probe = write_hub_db(tmp / "jupyterhub.sqlite", args.instances + 1)  # the probe's own address
    iocs = {i: start_ioc(tmp, i) for i in ("D11", "IN5")}
    gw_port = free_port()
    gateway = subprocess.Popen(
        [*GATEWAY, *(a for i, (_, p) in iocs.items() for a in ("--upstream", f"{i}=127.0.0.1:{p}")),
         "--hub-db-url", f"sqlite:///{tmp / 'jupyterhub.sqlite'}", "--catalogue", str(CATALOGUE),
         "--port", str(gw_port), "--audit-db-url", f"sqlite:///{tmp / 'audit.sqlite'}", "--today", "2026-11-24"],
        stdout=open(tmp / "gateway.log", "wb"), stderr=subprocess.STDOUT)
    relays: list[Relay] = []
    contexts: list[Context] = []
    try:
        via_gw = client_via(probe, gw_port, relays)
        direct = client_via("127.77.9.1", iocs["D11"][1], relays)
        contexts += [via_gw, direct]
        wait_for(lambda: via_gw.get("D11:TEMP:SP", timeout=2) is not None, 60,
                 f"the gateway (log: {tmp / 'gateway.log'})")
        time_puts(via_gw, 10), time_puts(direct, 10)  # warm both paths
        gw, dr = percentiles(time_puts(via_gw, args.puts)), percentiles(time_puts(direct, args.puts))
        print(f"write D11:TEMP:SP x{args.puts}: gateway p50 {gw[0]:.2f} ms p95 {gw[1]:.2f} ms; "
              f"direct p50 {dr[0]:.2f} ms p95 {dr[1]:.2f} ms; ratio p50 {gw[0] / dr[0]:.2f} p95 {gw[1] / dr[1]:.2f}")
        seen_gw = percentiles(time_changes(direct, via_gw, args.puts // 2))
        seen_dr = percentiles(time_changes(direct, direct, args.puts // 2))
        print(f"IOC change -> monitor update: via gateway p50 {seen_gw[0]:.2f} ms p95 {seen_gw[1]:.2f} ms; "
              f"direct p50 {seen_dr[0]:.2f} ms p95 {seen_dr[1]:.2f} ms")

        pvs = all_pvs("D11") + all_pvs("IN5")
        subscriptions = []
        updates = [0]

        def count(_value) -> None:
            updates[0] += 1

        for address in addresses:
            ctx = client_via(address, gw_port, relays)
            contexts.append(ctx)
            subscriptions += [ctx.monitor(pv, count) for pv in pvs]
        wait_for(lambda: updates[0] >= len(addresses) * len(pvs), 120, "every monitor's first value")
        idle = cpu_percent(psutil.Process(gateway.pid), 5)

        def move(seconds: float) -> None:
            end, position = time.monotonic() + seconds, 2.0
            while time.monotonic() < end:
                position = 8.0 if position == 2.0 else 2.0
                direct.put("D11:DET:Z.VAL", position, wait=True, timeout=60)

        start = updates[0]
        t0 = time.monotonic()
        ioc = psutil.Process(iocs["D11"][0].pid)
        ioc.cpu_percent(None)
        busy = cpu_percent(psutil.Process(gateway.pid), args.load_seconds, move)
        ioc_cpu = ioc.cpu_percent(None)
        rate = (updates[0] - start) / (time.monotonic() - t0)
        print(f"load: {len(addresses)} instances x {len(pvs)} PVs monitored through the gateway: gateway CPU "
              f"{idle:.1f} % idle, {busy:.1f} % with D11:DET:Z moving ({rate:.0f} updates/s delivered); "
              f"D11 IOC CPU {ioc_cpu:.1f} %")
        for s in subscriptions:
            s.close()
    finally:
        for c in contexts:
            c.close()
        for r in relays:
            r.close()
        gateway.terminate()
        for process, _ in iocs.values():
            process.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
