"""Test hub for the OpenStack backend: the demo profile + the test token (tests/hub_test_config.py),
OpenStack plans and the reconciler (the phone-home handler comes with hub_common). The backend's settings come as JSON
in VISA_TEST_OPENSTACK (cloud, hub id, proxy endpoint...) so each test run picks its own."""
import json
import os
from pathlib import Path

load_subconfig(str(Path(__file__).resolve().parents[2] / "hub_test_config.py"))  # noqa: F821

from visa_spawner.backends.openstack import reconciler  # noqa: E402
from visa_spawner.spawner import DEFAULT_PLANS  # noqa: E402

c = get_config()  # noqa: F821
c.VisaSpawner.plans = [*DEFAULT_PLANS, {
    "id": "openstack-small", "display_name": "Small VM", "backend": "openstack", "cpus": 1,
    "memory_mb": 512, "image": "visa-analysis", "description": "1 CPU, 512 MB (lab)"}]
# merged into the profile's settings (visa_profiles.common adds cookie_options with .update, so the
# value here is a LazyConfigValue until the hub loads it: .update, not {**...}, which needs a mapping)
c.JupyterHub.tornado_settings.update({"slow_spawn_timeout": 0})  # POST answers 202 at once: bursts are concurrent
c.JupyterHub.load_roles = [*c.JupyterHub.load_roles, {"name": "visa-tests-metrics", "scopes": ["read:metrics"],
                                                       "services": ["visa-tests"]}]
settings = json.loads(os.environ["VISA_TEST_OPENSTACK"])
# here, not in a file loading this one: reconciler.install makes the backend from this file's config
c.MaterialsPush.update(settings.pop("materials", {}))
c.OpenStackBackend.update(settings)
# the backend's own timeouts (build, boot) fail a spawn with a reason; JupyterHub's must come later
c.VisaSpawner.start_timeout = int(settings.get("build_timeout", 120) + settings.get("boot_timeout", 150) + 30)
c.VisaSpawner.http_timeout = 60
c.Reconciler.interval = float(os.environ.get("VISA_TEST_RECONCILE_INTERVAL", "60"))
c.Reconciler.grace = float(os.environ.get("VISA_TEST_RECONCILE_GRACE", "300"))
reconciler.install(c, token_file=Path(os.environ["VISA_STATE_DIR"]) / "reconciler_token", first_delay=1)
