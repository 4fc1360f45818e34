"""The test hub (demo profile + test token) with collaboration applied, as the demo will have it."""
import os
from pathlib import Path

load_subconfig(str(Path(__file__).resolve().parent.parent / "hub_test_config.py"))  # noqa: F821

import visa_collab.hub_config  # noqa: E402

c = get_config()  # noqa: F821
visa_collab.hub_config.apply(
    c, state_dir=os.environ["VISA_STATE_DIR"],
    reconcile_interval=float(os.environ.get("VISA_COLLAB_RECONCILE_INTERVAL", "60")),
)
# the tests' own service may also take someone off a proposal team and read shares
for role in c.JupyterHub.load_roles:
    if role["name"] == "visa-tests":
        role["scopes"] = sorted(set(role["scopes"]) | {"admin:groups", "read:shares"})
# short presence clocks so the owner-away tests do not wait a minute
c.Spawner.environment = {**c.Spawner.environment, "VISA_PRESENCE_TIMEOUT": "6", "VISA_OWNER_AWAY_GRACE": "2"}
# the owner counts as present (support must ask) this long after her own page last polled the service
for service in c.JupyterHub.services:
    if service.get("name") == visa_collab.hub_config.SERVICE:
        service["environment"] = {**service["environment"], "VISA_COLLAB_OWNER_PAGE_TTL": "10"}
