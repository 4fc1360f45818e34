"""The production profile's identity settings, from environment variables (pure).

Operators configure a container or a systemd unit with environment variables; this
maps them onto traitlets in one place, checks them all at once and reports every
problem in one message, so a hub with a typo refuses to start instead of starting
half-configured. Documented in docs/identity.md (one row per variable).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from traitlets.config import Config

from .env import EnvReader, SettingsError
from .pg import installed_pg_driver, with_pg_driver

REQUIRED = (
    "VISA_HUB_DB_URL",
    "JUPYTERHUB_CRYPT_KEY",
    "VISA_OIDC_ISSUER",
    "VISA_OIDC_CLIENT_ID",
    "VISA_CATALOGUE_DB_URL",
)


def _read(path: str) -> str:
    return Path(path).read_text(encoding="utf-8").strip()


def production_config(
    env: Mapping[str, str], read_file: Callable[[str], str] = _read, pg_driver: str | None = None
) -> Config:
    """Config for OIDC login, the SQL catalogue and the PostgreSQL hub database.

    Raises SettingsError listing every missing or invalid variable.
    """
    driver = pg_driver or installed_pg_driver()
    e = EnvReader(env)
    e.problems += [f"{name} is required" for name in REQUIRED if not e.get(name)]
    c = Config()

    # -- hub database: PostgreSQL (several hubs' worth of users, real transactions, backups)
    db_url = e.get("VISA_HUB_DB_URL")
    if db_url and not db_url.startswith(("postgresql://", "postgresql+")):
        e.problems.append("VISA_HUB_DB_URL must be a PostgreSQL URL (postgresql://user:password@host/db)")
    c.JupyterHub.db_url = with_pg_driver(db_url, driver)
    # the operations service (visa_ops.hub_config passes these on): its records on PostgreSQL, real SMTP
    if e.get("VISA_OPS_DB_URL") and not e.get("VISA_OPS_DB_URL").startswith(("postgresql://", "postgresql+")):
        e.problems.append("VISA_OPS_DB_URL must be a PostgreSQL URL (postgresql://user:password@host/db)")
    if e.get("VISA_OPS_SMTP_URL") and not e.get("VISA_OPS_SMTP_URL").startswith(("smtp://", "smtps://")):
        e.problems.append("VISA_OPS_SMTP_URL must be smtp://[user:password@]host[:port][?starttls=1] or smtps://...")
    # JUPYTERHUB_CRYPT_KEY is read by JupyterHub itself; auth_state (tokens, entitlements) needs it
    c.Authenticator.enable_auth_state = True

    # -- identity: the facility's OpenID provider
    c.JupyterHub.authenticator_class = "visa_authenticator.oidc.VisaOAuthenticator"
    a = c.VisaOAuthenticator
    a.oidc_issuer = e.get("VISA_OIDC_ISSUER")
    a.client_id = e.get("VISA_OIDC_CLIENT_ID")
    secret, secret_file = e.get("VISA_OIDC_CLIENT_SECRET"), e.get("VISA_OIDC_CLIENT_SECRET_FILE")
    if secret_file:
        try:
            secret = read_file(secret_file)
        except OSError as err:
            e.problems.append(f"VISA_OIDC_CLIENT_SECRET_FILE: cannot read {secret_file} ({err.strerror})")
    if not secret:
        e.problems.append("VISA_OIDC_CLIENT_SECRET or VISA_OIDC_CLIENT_SECRET_FILE is required")
    a.client_secret = secret
    if e.get("VISA_OIDC_CALLBACK_URL"):
        a.oauth_callback_url = e.get("VISA_OIDC_CALLBACK_URL")
    a.username_claim = e.get("VISA_OIDC_USERNAME_CLAIM", "preferred_username")
    a.scope = e.get("VISA_OIDC_SCOPES", "openid profile email").split()
    a.login_service = e.get("VISA_OIDC_LOGIN_SERVICE", "your facility account")
    c.Authenticator.auto_login = e.flag("VISA_OIDC_AUTO_LOGIN", True)
    if e.get("VISA_OIDC_LOGOUT_URL"):
        a.logout_redirect_url = e.get("VISA_OIDC_LOGOUT_URL")
    if e.get("VISA_OIDC_CA_CERTS"):
        a.http_request_kwargs = {"connect_timeout": 5.0, "request_timeout": 15.0,
                                 "ca_certs": e.get("VISA_OIDC_CA_CERTS")}  # fmt: skip
    c.Authenticator.auth_refresh_age = int(e.number("VISA_AUTH_REFRESH_AGE", 300, minimum=1))
    a.keep_session_if_provider_down = e.flag("VISA_OIDC_KEEP_SESSION_IF_DOWN", True)

    # -- catalogue: the user office's database, asked live
    a.catalogue_class = "visa_authenticator.sql_catalogue.SqlCatalogue"
    c.SqlCatalogue.url = with_pg_driver(e.get("VISA_CATALOGUE_DB_URL"), driver)
    if e.get("VISA_CATALOGUE_DB_SCHEMA"):
        c.SqlCatalogue.db_schema = e.get("VISA_CATALOGUE_DB_SCHEMA")
    c.SqlCatalogue.query_timeout = e.number("VISA_CATALOGUE_QUERY_TIMEOUT", 10, minimum=0.1)
    c.CachedCatalogue.ttl = e.number("VISA_CATALOGUE_CACHE_TTL", 60)

    # -- rules
    if e.get("VISA_DEFAULT_QUOTA"):
        a.default_quota = int(e.number("VISA_DEFAULT_QUOTA", 2, minimum=-1))
    if e.get("VISA_ROLE_QUOTAS"):
        try:
            quotas: Any = json.loads(e.get("VISA_ROLE_QUOTAS"))
            assert isinstance(quotas, dict)
            a.role_quotas = quotas
        except (ValueError, AssertionError):
            e.problems.append('VISA_ROLE_QUOTAS must be a JSON object, e.g. {"STAFF": 5, "ADMIN": -1}')

    if e.problems:
        raise SettingsError("; ".join(e.problems))
    return c


METRICS_SERVICE = "prometheus"


def apply_metrics_scraper(c: Any, env: Mapping[str, str]) -> None:
    """The production scrape role: with VISA_METRICS_TOKEN set, a `prometheus` service whose token
    may read `/hub/metrics` (`read:metrics`) and reach the two services' `/metrics` pages, and
    nothing else; metrics stay authenticated
    (`JupyterHub.authenticate_prometheus`). Services and roles are added to the profile's, not
    replaced (so not in `production_config`, which is merged). Raises SettingsError on a short token.

    Prometheus then scrapes ``/hub/metrics`` with ``authorization: {type: token, credentials: …}``
    (docs/operations.md, "Hub metrics").
    """
    from visa_collab.hub_config import _add_role, _get

    c.JupyterHub.authenticate_prometheus = True
    token = (env.get("VISA_METRICS_TOKEN") or "").strip()
    if not token:
        return
    if len(token) < 32:
        raise SettingsError("VISA_METRICS_TOKEN must be at least 32 characters (e.g. `openssl rand -hex 32`)")
    services = [s for s in _get(c.JupyterHub, "services", []) if s.get("name") != METRICS_SERVICE]
    c.JupyterHub.services = [*services, {"name": METRICS_SERVICE, "api_token": token}]
    # the services' own metrics (lifecycle actions, collab sessions) at /services/<name>/metrics
    _add_role(c, {"name": METRICS_SERVICE, "services": [METRICS_SERVICE], "scopes": [
        "read:metrics", "access:services!service=visa-collab", "access:services!service=visa-ops"]})
