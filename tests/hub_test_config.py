"""The demo profile plus an admin API token for the tests (never used by `make demo`)."""
import os
from pathlib import Path

load_subconfig(str(Path(__file__).resolve().parent.parent / "hub_config" / "demo" / "jupyterhub_config.py"))  # noqa: F821

c = get_config()  # noqa: F821
c.JupyterHub.services = [*(c.JupyterHub.services if "services" in c.JupyterHub else []), {"name": "visa-tests", "api_token": os.environ["VISA_TEST_API_TOKEN"]}]
c.JupyterHub.load_roles = [*(c.JupyterHub.load_roles if "load_roles" in c.JupyterHub else []), {"name": "visa-tests", "scopes": ["admin:users", "admin:servers", "access:servers", "read:hub"],
                            "services": ["visa-tests"]}]
