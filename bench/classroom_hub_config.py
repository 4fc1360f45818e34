"""bench/classroom.py's hub: the warm-pool test hub (`course-<pool>` servers adopt from `<pool>`) with
any number of participants: any name logs in with the password "bench" and may use the open-data
proposal, so 30 people need no catalogue entries. Never used by `make demo`."""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
load_subconfig(str(REPO / "tests" / "training" / "pool_hub_config.py"))  # noqa: F821

from visa_spawner.spawner import VisaSpawner  # noqa: E402

OPEN_DATA = "P-2021-007"


class BenchSpawner(VisaSpawner):
    """Every participant may start the sandbox plans on the open-data proposal (no auth_state)."""

    async def entitlements(self):
        return {"proposals": [{"id": OPEN_DATA, "title": "Open data"}], "roles": ["USER"], "quota": 4}


c = get_config()  # noqa: F821
c.JupyterHub.spawner_class = BenchSpawner
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = "bench"
c.Authenticator.allow_all = True
c.WarmPool.max_total = 40
c.WarmPool.refill_quiet = 15  # the default (the tests' hub shortens it)
