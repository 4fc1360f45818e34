"""Demo profile: SQLite, the demo catalogue, a demo password login, sandbox instances.

Everything the hub writes goes under $VISA_STATE_DIR (default /var/lib/visahub/demo): the
database, secrets, sandbox homes and the demo data. Ports come from the environment so tests
can run several hubs side by side. Hub and instance settings are shared with the production
profile (visa_profiles.common); only identity, catalogue and database differ.
"""
import os
from pathlib import Path

from visa_demo.clock import DEMO_TODAY, pinned_clock
from visa_profiles.common import (
    apply_hub_and_instances,
    exit_on_bad_plans,
    prepare_state_dir,
    private_sqlite_url,
    secret_file,
)

here = Path(__file__).resolve().parent

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)

state = prepare_state_dir(Path(os.environ.get("VISA_STATE_DIR", "/var/lib/visahub/demo")))
apply_hub_and_instances(c, state, here.parent.parent, os.environ)

c.JupyterHub.db_url = private_sqlite_url(state / "jupyterhub.sqlite")
c.CryptKeeper.keys = [bytes.fromhex(secret_file(state, "crypt_key"))]

# -- identity: a password login over the demo catalogue (the login page lists the accounts) ------
c.JupyterHub.authenticator_class = "visa-demo"
c.Authenticator.enable_auth_state = True
c.FileCatalogue.path = os.environ.get("VISA_CATALOGUE", str(here / "catalogue.yaml"))
# the demo's facility date (its schedule is written around it); VISA_DEMO_TODAY= (empty): the real date
c.VisaAuthenticator.clock = pinned_clock(os.environ.get("VISA_DEMO_TODAY", DEMO_TODAY))

exit_on_bad_plans(c)  # last: a bad plan stops the hub here, with its name
