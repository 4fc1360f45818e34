"""PV change on the IOC → the new value drawn in the browser, through the hub (issue 18's browser leg).

Real parts end to end: a demo hub (sandbox backend) running D11's IOC and the gateway as its
services, alice's sandbox instance of P-2026-011, its instrument tab (PyDM in the instance's Xvnc,
noVNC through the hub's proxy) in Debian's Chromium. Each sample puts a new `D11:TEMP:SP`
straight to the IOC's own PVA port; the page stamps the first animation frame
(requestAnimationFrame) whose pixels in the setpoint's field differ. The path measured: IOC →
gateway → the sandbox's route → PyDM → Xvnc → jupyter-server → the hub's proxy → noVNC's canvas.

Both clocks are the host's wall clock (the page's `performance.timeOrigin + now()`); their offset is
measured first and subtracted. Frames come at the display's rate, so a sample may be late by up to
one frame (≈ 17 ms at 60 Hz). Target: p95 ≤ 250 ms.

    .venv/bin/python bench/instrument_browser.py [--changes 30]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from p4p.client.thread import Context  # noqa: E402

from bench.instrument import percentiles  # noqa: E402
from tests.browser import chromium, demo_login  # noqa: E402
from tests.hubtools import DEMO_CONFIG, make_demo_data, make_state_dir, running_hub, wait_for  # noqa: E402
from tests.instance import instrument_ui as ui  # noqa: E402
from visa_instruments.gateway import tcp_client_conf  # noqa: E402

PV = "D11:TEMP:SP"
PAGE_CLOCK = "performance.timeOrigin + performance.now()"


def clock_offset(page, tries: int = 20) -> float:
    """The page's clock minus this process's, in ms, from the quickest of `tries` round trips."""
    best = None
    for _ in range(tries):
        before = time.time() * 1000
        seen = page.evaluate(PAGE_CLOCK)
        after = time.time() * 1000
        if best is None or after - before < best[0]:
            best = (after - before, seen - (before + after) / 2)
    return best[1]


def changes(page, since: int = 0) -> list[float]:
    """The page's times (ms) of the changes drawn in the watched region, from the `since`-th."""
    return page.evaluate("window.visaWatch.changes")[since:]


def quiet(page, for_ms: float = 300) -> bool:
    """No change drawn in the watched region for `for_ms` (the last sample's drawing is over)."""
    seen = changes(page)
    return not seen or page.evaluate(PAGE_CLOCK) - seen[-1] > for_ms


def measure(page, ioc: Context, values: list[float], offset: float) -> list[float]:
    """Seconds from each put on the IOC until the page draws the change."""
    latencies = []
    for value in values:
        count = len(changes(page))
        sent = time.time() * 1000
        ioc.put(PV, value, wait=True, timeout=5)
        seen = wait_for(partial(changes, page, count), 10, f"{PV} = {value} drawn in the page", interval=0.01)
        latencies.append((seen[0] - offset - sent) / 1000)
        wait_for(lambda: quiet(page), 10, "the page to stop drawing", interval=0.05)
    return latencies


def run(changes_count: int) -> list[float]:
    state = make_state_dir("visahub-bench-instrument-")
    make_demo_data(DEMO_CONFIG.parent / "catalogue.yaml", state / "data")
    try:
        with running_hub(state, extra_env={"VISA_DEMO_INSTRUMENTS": "D11"}) as hub, chromium() as browser:
            port = int((state / "visa_ioc_d11_pva_port").read_text())
            page = demo_login(browser, hub.url, "alice", width=1280, height=720 + ui.BAR)
            server = ui.new_instance(page, "Bench instrument")
            page.goto(f"{hub.url}/user/alice/{server}/visa/instrument/D11")
            ui.wait_connected(page)
            page.evaluate(ui.WATCH_REGION, list(ui.TEMP_SP))
            with Context("pva", conf=tcp_client_conf([f"127.0.0.1:{port}"]), useenv=False) as ioc:
                start = float(ioc.get(PV, timeout=5))
                # the first change also waits for PyDM's channels (connected once it is drawn)
                ioc.put(PV, start + 0.25, wait=True, timeout=5)
                wait_for(lambda: changes(page), 60, "the panel to draw its first change")
                wait_for(lambda: quiet(page), 10, "the page to stop drawing")
                offset = clock_offset(page)
                print(f"page clock - host clock: {offset:.2f} ms (subtracted)")
                values = [start + 0.5 * (i + 1) for i in range(changes_count)]
                try:
                    return measure(page, ioc, values, offset)
                finally:
                    ioc.put(PV, start, wait=True, timeout=5)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=30, help="PV changes to time")
    args = parser.parse_args()
    latencies = run(args.changes)
    p50, p95 = percentiles(latencies)
    print(f"IOC put → drawn in the browser via the hub ({PV}, {len(latencies)} changes): "
          f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, min {min(latencies) * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms, mean {statistics.mean(latencies) * 1000:.0f} ms (target p95 ≤ 250 ms: "
          f"{'met' if p95 <= 250 else 'NOT met'})")


if __name__ == "__main__":
    main()
