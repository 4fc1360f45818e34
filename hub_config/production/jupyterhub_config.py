"""Production profile: the facility's OpenID Connect login, the user office's SQL catalogue,
PostgreSQL for the hub database, sandbox instances, and OpenStack instances when
VISA_OPENSTACK_CLOUD is set.

Everything is configured from environment variables, listed with their defaults in
docs/identity.md and docs/openstack.md; a missing or invalid one stops the hub at start with a
message naming it.
State (cookie secret, proxy token, pid files, sandbox homes) goes under $VISA_STATE_DIR
(default /var/lib/visahub/production).
"""
import os
import sys
from pathlib import Path

from visa_ops.hub_config import refresh_archiving
from visa_profiles.common import apply_hub_and_instances, exit_on_bad_plans, prepare_state_dir
from visa_profiles.env import SettingsError
from visa_profiles.openstack import openstack_config, openstack_enabled
from visa_profiles.production import apply_metrics_scraper, production_config
from visa_spawner.backends.openstack import reconciler

here = Path(__file__).resolve().parent

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)

state = prepare_state_dir(Path(os.environ.get("VISA_STATE_DIR", "/var/lib/visahub/production")))
apply_hub_and_instances(c, state, here.parent.parent, os.environ)
try:
    c.merge(production_config(os.environ))
except SettingsError as e:
    sys.exit(f"VISA Hub production profile: {e}. See docs/identity.md.")
try:
    apply_metrics_scraper(c, os.environ)  # the `prometheus` service: read:metrics with VISA_METRICS_TOKEN
except SettingsError as e:
    sys.exit(f"VISA Hub production profile: {e}. See docs/operations.md.")
if openstack_enabled(os.environ):
    try:
        c.merge(openstack_config(os.environ, list(c.VisaSpawner.plans)))
    except SettingsError as e:
        sys.exit(f"VISA Hub production profile: {e}. See docs/openstack.md.")
    reconciler.install(c, token_file=state / "reconciler_token")
# visa-ops was configured before the OpenStack settings: whether OpenStack instances can be archived
# (and so deleted by the lifecycle rules) depends on its stop_action, known only now
refresh_archiving(c)

exit_on_bad_plans(c)  # last: a bad plan stops the hub here, with its name
