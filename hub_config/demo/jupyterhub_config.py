"""Demo profile: SQLite, the demo catalogue, a demo password login, sandbox instances.

Everything the hub writes goes under $VISA_STATE_DIR (default /var/lib/visahub/demo): the
database, secrets, sandbox homes and the demo data. Ports come from the environment so tests
can run several hubs side by side.
"""
import os
import secrets
from pathlib import Path

import visa_authenticator
import visa_spawner
from visa_spawner.handlers import handlers as visa_handlers
from visa_spawner.handlers import named_server_limit

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)

here = Path(__file__).resolve().parent
repo = here.parent.parent
state = Path(os.environ.get("VISA_STATE_DIR", "/var/lib/visahub/demo"))
state.mkdir(parents=True, exist_ok=True)
os.chmod(state, 0o711)


def _secret_file(name: str, nbytes: int = 32) -> str:
    """A secret made once and kept in the state dir (0600), never logged."""
    path = state / name
    if not path.exists():
        path.write_text(secrets.token_hex(nbytes))
        path.chmod(0o600)
    return path.read_text().strip()


# -- hub -----------------------------------------------------------------------------------
c.JupyterHub.bind_url = f"http://127.0.0.1:{os.environ.get('VISA_HUB_PORT', '8000')}"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{os.environ.get('VISA_HUB_API_PORT', '8081')}"
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(state / "jupyterhub.pid")
c.CryptKeeper.keys = [bytes.fromhex(_secret_file("crypt_key"))]
c.ConfigurableHTTPProxy.command = [str(repo / "node_modules" / ".bin" / "configurable-http-proxy")]
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{os.environ.get('VISA_PROXY_API_PORT', '8001')}"
c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")
c.ConfigurableHTTPProxy.auth_token = _secret_file("proxy_token")
c.JupyterHub.cleanup_servers = False  # instances survive a hub restart and are found again

c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = named_server_limit
c.JupyterHub.redirect_to_server = False
c.JupyterHub.default_url = "/hub/home"
c.JupyterHub.extra_handlers = visa_handlers
c.JupyterHub.template_paths = [
    str(Path(visa_spawner.__file__).parent / "templates"),
    visa_authenticator.TEMPLATES_DIR,
]

# -- identity --------------------------------------------------------------------------------
c.JupyterHub.authenticator_class = "visa-demo"
c.Authenticator.enable_auth_state = True
c.Authenticator.allow_all = True  # the catalogue decides who exists
c.FileCatalogue.path = os.environ.get("VISA_CATALOGUE", str(here / "catalogue.yaml"))

# -- instances -------------------------------------------------------------------------------
c.JupyterHub.spawner_class = "visa"
c.VisaSpawner.data_root = str(state / "data")
c.VisaSpawner.start_timeout = 90
c.VisaSpawner.http_timeout = 60
c.SandboxBackend.state_dir = str(state / "sandbox")
c.SandboxBackend.instance_env = os.environ.get("VISA_INSTANCE_ENV", "/opt/visahub/instance-env")
