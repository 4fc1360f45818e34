"""bench/classroom_openstack.py's hub: the OpenStack warm-pool test hub (`course-<pool>` servers adopt
from `<pool>`) where every participant may start the OpenStack plan on the open-data proposal (no
auth_state: the bench creates 2 x 100 users through the REST API). Never used by `make demo`."""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
load_subconfig(str(REPO / "tests" / "spawner" / "openstack" / "pool_hub_config.py"))  # noqa: F821

from visa_spawner.spawner import VisaSpawner  # noqa: E402

OPEN_DATA = "P-2021-007"


class BenchSpawner(VisaSpawner):
    """Every participant may start the plans on the open-data proposal (no auth_state)."""

    async def entitlements(self):
        return {"proposals": [{"id": OPEN_DATA, "title": "Open data"}], "roles": ["USER"], "quota": 4}


c = get_config()  # noqa: F821
c.JupyterHub.spawner_class = BenchSpawner
c.OpenStackPool.max_total = 100
