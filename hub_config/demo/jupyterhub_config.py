"""Demo profile: SQLite, the demo catalogue, a demo password login, sandbox instances.

Everything the hub writes goes under $VISA_STATE_DIR (default /var/lib/visahub/demo): the
database, secrets, sandbox homes and the demo data. Ports come from the environment so tests
can run several hubs side by side. Hub and instance settings are shared with the production
profile (visa_profiles.common); only identity, catalogue and database differ.
"""
import os
from pathlib import Path

import visa_instruments.hub_config
import visa_training.hub_config
from visa_demo.clock import DEMO_TODAY, pinned_clock
from visa_ops.hub_config import hub_db_url
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
demo_today = os.environ.get("VISA_DEMO_TODAY", DEMO_TODAY)
c.VisaAuthenticator.clock = pinned_clock(demo_today)

# -- the facility's instruments: D11 and IN5 as EPICS IOCs, and the gateway instances reach them by
# (docs/instrument.md); VISA_DEMO_INSTRUMENTS= (empty) runs none
instruments = [i for i in os.environ.get("VISA_DEMO_INSTRUMENTS", "D11,IN5").split(",") if i.strip()]
if instruments:
    visa_instruments.hub_config.apply(
        c, state_dir=state, catalogue=c.FileCatalogue.path, hub_db_url=hub_db_url(c, os.environ),
        instruments=[i.strip() for i in instruments], today=demo_today,
    )

# -- training: courses, seats, the class started in one click, the trainer's grid (docs/training.md)
visa_training.hub_config.apply(c, state_dir=state, courses=here / "courses.yaml")

exit_on_bad_plans(c)  # last: a bad plan stops the hub here, with its name
