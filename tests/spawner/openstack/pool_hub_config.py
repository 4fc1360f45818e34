"""The OpenStack test hub (hub_config.py here) with `CourseHookOpenStack` (a server `course-<pool>`
adopts from pool `<pool>`), and the tests' service token allowed to keep pools."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the hook backend is imported from tests/
load_subconfig(str(Path(__file__).with_name("hub_config.py")))  # noqa: F821

from visa_spawner.spawner import BACKEND_CLASSES  # noqa: E402

c = get_config()  # noqa: F821
c.VisaSpawner.backend_classes = {**BACKEND_CLASSES,
                                 "openstack": "tests.spawner.openstack.pool_backend.CourseHookOpenStack"}
c.JupyterHub.load_roles = [{**r, "scopes": [*r["scopes"], "custom:visa-pools"]} if r["name"] == "visa-tests" else r
                           for r in c.JupyterHub.load_roles]
