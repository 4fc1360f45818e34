"""The tests' hub (demo profile, admin token) with `CourseHookBackend` for sandbox plans."""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
load_subconfig(str(REPO / "tests" / "hub_test_config.py"))  # noqa: F821

from visa_spawner.spawner import BACKEND_CLASSES  # noqa: E402

c = get_config()  # noqa: F821
c.VisaSpawner.backend_classes = {**BACKEND_CLASSES, "sandbox": "tests.training.pool_backend.CourseHookBackend"}
# the tests' service token may keep pools, as the training service's does
c.JupyterHub.load_roles = [{**r, "scopes": [*r["scopes"], "custom:visa-pools"]} if r["name"] == "visa-tests" else r
                           for r in c.JupyterHub.load_roles]
c.WarmPool.refill_quiet = 1  # tests wait for refills; the default (15 s) is for a class arriving
