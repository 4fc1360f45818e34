"""bench/classroom_openstack.py's hub: the OpenStack warm-pool test hub (`course-<pool>` servers adopt
from `<pool>`) where every participant may start the OpenStack plan on the open-data proposal (no
auth_state: the bench creates 2 x 100 users through the REST API). Never used by `make demo`."""
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
load_subconfig(str(REPO / "tests" / "spawner" / "openstack" / "pool_hub_config.py"))  # noqa: F821

from visa_spawner.spawner import VisaSpawner  # noqa: E402

OPEN_DATA = "P-2021-007"


_watching = []


def start_loop_watch() -> None:
    """`VISA_BENCH_LOOP_WATCH=<ms>`: log where the hub's loop stalls that long (bench/loop_watch.py)."""
    if os.environ.get("VISA_BENCH_LOOP_WATCH") and not _watching:
        import asyncio

        from bench.loop_watch import watch, watch_gc
        threshold = int(os.environ["VISA_BENCH_LOOP_WATCH"]) / 1000
        _watching.append(watch(asyncio.get_running_loop(), threshold))
        watch_gc(threshold / 2)


class BenchSpawner(VisaSpawner):
    """Every participant may start the plans on the open-data proposal (no auth_state)."""

    async def entitlements(self):
        start_loop_watch()
        return {"proposals": [{"id": OPEN_DATA, "title": "Open data"}], "roles": ["USER"], "quota": 4}


c = get_config()  # noqa: F821
c.JupyterHub.spawner_class = BenchSpawner
c.OpenStackPool.max_total = 100
# The bench plays the training service (class start) and a user (the probe) with the tests' token, a
# config-given one that the hub would hash 16384 times per request. In production those requests
# carry tokens the hub generated itself (the managed training service's, the users' OAuth ones),
# hashed once; the tests' token is as random (192 bits), so it gets the same single round here.
c.JupyterHub.trust_user_provided_tokens = True
if os.environ.get("VISA_BENCH_HUB_DB_URL"):  # --db postgresql: the production database
    c.JupyterHub.db_url = os.environ["VISA_BENCH_HUB_DB_URL"]
