"""The hub API's latency, probed from a process of its own.

A benchmark's own process runs the participants' clients (and, on the OpenStack lab, the VM
stand-ins' HTTP servers and 100 held requests) as Python threads: a probe thread there could wait
for the GIL behind them and charge the bench's load to the hub. This probe is a separate process
that does nothing else: one `GET <url>` every `interval` s, a new connection each time as a client
would, one line "<clock> <ms> <ok>" per sample on stdout, until its stdin closes. (Measured: in two
OpenStack classroom runs with both, the thread's p99 was 184 and 251 ms, this process's 220 and
310 ms, so the bench's own threads were not what made the hub's API slow.)

    python -m bench.api_probe URL [--interval 0.25]     (the token in VISA_PROBE_TOKEN)
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def latency_stats(latencies: list[float], errors: int, clocks: list[float]) -> dict:
    """p50/p95/p99/max in ms, how many samples were over the 200 ms target, the errors, and when
    (UTC, as in the hub's log) the three slowest were sent."""
    if not latencies:
        return {}
    slowest = sorted(range(len(latencies)), key=lambda i: -latencies[i])[:3]
    return {"slowest": [[time.strftime("%H:%M:%S", time.gmtime(clocks[i])) + f".{int(clocks[i] % 1 * 1000):03d}",
                         round(latencies[i], 1)] for i in slowest],
            "n": len(latencies), "p50_ms": round(percentile(latencies, 50), 1),
            "p95_ms": round(percentile(latencies, 95), 1), "p99_ms": round(percentile(latencies, 99), 1),
            "max_ms": round(max(latencies), 1), "over_200ms": sum(x > 200 for x in latencies), "errors": errors}


class ApiProbe:
    """Runs the probe process from `start()` to `stop()`, which returns its `latency_stats`."""

    def __init__(self, url: str, token: str, interval: float = 0.25) -> None:
        self.argv = [sys.executable, "-m", "bench.api_probe", url, "--interval", str(interval)]
        self.env = {**os.environ, "VISA_PROBE_TOKEN": token}
        self._proc: subprocess.Popen | None = None

    def start(self) -> ApiProbe:
        self._proc = subprocess.Popen(self.argv, cwd=REPO, env=self.env, text=True,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        return self

    def stop(self) -> dict:
        assert self._proc
        out, _ = self._proc.communicate(timeout=60)  # closes its stdin: the probe's signal to exit
        samples = [line.split() for line in out.splitlines()]  # "clock ms ok"
        return latency_stats([float(ms) for _, ms, _ in samples], sum(ok != "1" for *_, ok in samples),
                             [float(clock) for clock, _, _ in samples])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--interval", type=float, default=0.25)
    args = parser.parse_args()
    headers = {"Authorization": f"token {os.environ['VISA_PROBE_TOKEN']}"}
    stopping = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stopping.set()), daemon=True).start()
    while not stopping.wait(args.interval):
        sent, t0 = time.time(), time.perf_counter()
        try:
            ok = requests.get(args.url, headers=headers, timeout=30).status_code < 500
        except requests.RequestException:
            ok = False
        print(f"{sent:.3f} {(time.perf_counter() - t0) * 1000:.1f} {int(ok)}", flush=True)


if __name__ == "__main__":
    main()
