"""VISA Hub, hub side: facility catalogue, entitlement rules and authenticators.

`TEMPLATES_DIR` goes into `c.JupyterHub.template_paths`: it holds the login page
that lists the demo accounts.
"""

import os

TEMPLATES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
