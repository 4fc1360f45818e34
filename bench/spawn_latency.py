"""Spawn latency: time from the spawn request until the instance's Lab answers through the hub.

Runs two hubs side by side in the same run (same proxy, database, machine): one with VisaSpawner
and the sandbox backend, one with JupyterHub's stock SimpleLocalProcessSpawner, alternating spawns
so both see the same machine load. Prints the medians and the ratio.

    .venv/bin/python bench/spawn_latency.py [--runs 5]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.hubtools import DEMO_CONFIG, Browserless, Hub, make_demo_data, make_state_dir, running_hub, wait_for  # noqa: E402

CATALOGUE = DEMO_CONFIG.parent / "catalogue.yaml"
USER, PASSWORD = "alice", "alice-demo"


def first_proposal(client: Browserless) -> str:
    import re

    m = re.search(r'<option value="([^"]+)"', client.home().text.split('id="visa-proposal"', 1)[1])
    assert m, "alice has no proposal in the demo catalogue"
    return m.group(1)


def spawn_once(hub: Hub, name: str, body: dict) -> float:
    """Request a spawn and return the seconds until GET <server>/api/status answers 200."""
    t0 = time.perf_counter()
    r = hub.api("POST", f"/users/{USER}/servers/{name}", json=body)
    assert r.status_code in (201, 202), r.text

    def lab_answers() -> bool:
        r = requests.get(f"{hub.url}/user/{USER}/{name}/api/status",
                         headers={"Authorization": f"token {hub.token}"}, timeout=5, allow_redirects=False)
        return r.status_code == 200

    wait_for(lab_answers, 120, f"{name} Lab answering", interval=0.02)
    elapsed = time.perf_counter() - t0
    r = hub.api("DELETE", f"/users/{USER}/servers/{name}", json={"remove": True})
    assert r.status_code in (202, 204), r.text
    wait_for(lambda: hub.server_model(USER, name) is None, 60, f"{name} deleted")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    visa_state, stock_state = make_state_dir("visahub-bench-"), make_state_dir("visahub-bench-stock-")
    make_demo_data(CATALOGUE, visa_state / "data")
    times: dict[str, list[float]] = {"visa-sandbox": [], "stock-local": []}
    try:
        with running_hub(visa_state) as visa, running_hub(
            stock_state, config=Path(__file__).parent / "stock_hub_config.py"
        ) as stock:
            alice = Browserless(visa, USER, PASSWORD)
            assert alice.logged_in, "demo login failed"
            Browserless(stock, USER, PASSWORD)
            proposal = first_proposal(alice)
            visa_body = {"display_name": "bench", "user_options": {"proposal": proposal, "plan": "sandbox-small"}}
            for i in range(args.runs + 1):  # the first round warms caches and is not counted
                for label, hub, body in (("visa-sandbox", visa, visa_body), ("stock-local", stock, {})):
                    t = spawn_once(hub, f"bench-{i}", body)
                    if i:
                        times[label].append(t)
                    print(f"  {label:13s} run {i}: {t:.3f} s{' (warm-up)' if not i else ''}", flush=True)
    finally:
        shutil.rmtree(visa_state, ignore_errors=True)
        shutil.rmtree(stock_state, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"spawn→Lab median over {args.runs} runs: visa-sandbox {med['visa-sandbox']:.3f} s, "
          f"stock SimpleLocalProcessSpawner {med['stock-local']:.3f} s, "
          f"ratio {med['visa-sandbox'] / med['stock-local']:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
