"""The production profile plus an admin API token for the tests (never used in production)."""
import os
from pathlib import Path

load_subconfig(str(Path(__file__).resolve().parents[2] / "hub_config" / "production" / "jupyterhub_config.py"))  # noqa: F821

c = get_config()  # noqa: F821
c.JupyterHub.services = [*(c.JupyterHub.services if "services" in c.JupyterHub else []), {"name": "visa-tests", "api_token": os.environ["VISA_TEST_API_TOKEN"]}]
c.JupyterHub.load_roles = [*(c.JupyterHub.load_roles if "load_roles" in c.JupyterHub else []), {
    "name": "visa-tests",
    "scopes": ["admin:users", "admin:auth_state", "admin:servers", "read:hub", "read:groups"],
    "services": ["visa-tests"],
}]
# check the provider at every click on "Sign in", so a test can take it down between logins
c.VisaOAuthenticator.provider_check_interval = 0
