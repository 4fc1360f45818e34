"""A real hub (tests/hubtools.Hub) configured for the lab cloud, and what tests ask it."""
from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path

import requests

from tests.hubtools import DEMO_CONFIG, Hub, make_demo_data, make_state_dir
from tests.spawner.openstack import lab

CONFIG = Path(__file__).resolve().parent / "hub_config.py"


def openstack_settings(hub_id: str, proxy=None, **traits) -> dict:
    return {"cloud": "lab-demo", "clouds_yaml": str(lab.CLOUDS), "hub_id": hub_id, "networks": "none",
            "address_source": "phone-home", "boot_check_interval": 2.0, "request_timeout": 10.0,
            "retry_backoff": 0.3, "build_timeout": 120.0, "boot_timeout": 150.0, "max_concurrent_calls": 8,
            **({"endpoint_overrides": {"identity": proxy.urls["identity"] + "/v3"}} if proxy else {}), **traits}


def make_hub(hub_id: str, proxy=None, *, interval: float = 60, grace: float = 300, config: Path = CONFIG,
             env: dict[str, str] | None = None, **traits) -> Hub:
    state = make_state_dir("visahub-os-")
    make_demo_data(DEMO_CONFIG.parent / "catalogue.yaml", state / "data")
    return Hub(state, config=config, extra_env={
        "VISA_TEST_OPENSTACK": json.dumps(openstack_settings(hub_id, proxy, **traits)),
        "VISA_TEST_RECONCILE_INTERVAL": str(interval), "VISA_TEST_RECONCILE_GRACE": str(grace), **(env or {}),
    })


def spawn(hub: Hub, user: str, name: str, **options) -> requests.Response:
    body = {"plan": "openstack-small", "proposal": "", "screen": "1280x720", "keyboard": "us", **options}
    return hub.api("POST", f"/users/{user}/servers/{name}", json=body)


def progress_events(hub: Hub, user: str, name: str, timeout: float = 300) -> list[dict]:
    """The spawn's progress stream until ready/failed (the API behind the progress bar)."""
    events = []
    with requests.get(f"{hub.url}/hub/api/users/{user}/servers/{name}/progress", stream=True, timeout=timeout,
                      headers={"Authorization": f"token {hub.token}"}) as r:
        if r.status_code != 200:
            return [{"http": r.status_code, "text": r.text[:300]}]
        for line in r.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                events.append(json.loads(line[5:]))
                if events[-1].get("ready") or events[-1].get("failed"):
                    break
    return events


class LatencyProbe:
    """Measures the hub API's latency (GET /hub/api/user as the test service) while it runs."""

    def __init__(self, hub: Hub, period: float = 0.1) -> None:
        self.hub, self.period, self.samples = hub, period, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        s = requests.Session()
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                s.get(f"{self.hub.url}/hub/api/user", headers={"Authorization": f"token {self.hub.token}"}, timeout=30)
                self.samples.append(time.perf_counter() - t0)
            except requests.RequestException:
                pass
            self._stop.wait(self.period)

    def __enter__(self) -> LatencyProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(35)

    def quantile(self, q: float) -> float:
        data = sorted(self.samples)
        return data[min(len(data) - 1, int(q * len(data)))] if data else float("nan")

    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")
