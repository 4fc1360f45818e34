"""The OpenStack test hub (hub_config.py here) with the training service over the courses of
`$VISA_STATE_DIR/courses.yaml` (written by the test), applied again after the OpenStack plans exist
so its courses may use them. (MaterialsPush options come through hub_config.py: its reconciler
makes the hub's backend from that file's config, which misses what a file loading it sets.)"""
import os
from pathlib import Path

load_subconfig(str(Path(__file__).with_name("hub_config.py")))  # noqa: F821

import visa_training.hub_config  # noqa: E402

c = get_config()  # noqa: F821
state = Path(os.environ["VISA_STATE_DIR"])
visa_training.hub_config.apply(c, state_dir=state, courses=state / "courses.yaml")
# the tests' service token may read the pools, as the training service's does
c.JupyterHub.load_roles = [{**r, "scopes": [*r["scopes"], "custom:visa-pools"]} if r["name"] == "visa-tests" else r
                           for r in c.JupyterHub.load_roles]
