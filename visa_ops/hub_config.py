"""Hub configuration for facility operations, as one call: ``visa_ops.hub_config.apply(c, state_dir=...)``.

Adds, on top of what the profile configured (lists and dicts extended, never replaced):

* ``JupyterHub.services``: the hub-managed ``visa-ops`` service (hub OAuth, no confirmation
  page; its OAuth tokens may carry ``custom:visa-admin`` so admin pages need no extra hub call)
  with its settings in ``VISA_OPS_*`` variables (docs/operations.md); and, when no SMTP server
  is configured (the demo), ``visa-ops-mail``: a real SMTP server process (aiosmtpd) writing
  every message to a Maildir that the admin console shows (``VISA_OPS_OUTBOX_MAILDIR``);
* ``JupyterHub.load_roles``: the service's scopes; ``access:services!service=visa-ops`` for users.

Environment read here: ``VISA_OPS_DB_URL`` (default: SQLite, 0600, in the state directory),
``VISA_OPS_SMTP_URL``, ``VISA_OPS_MAIL_FROM``, ``VISA_OPS_PUBLIC_URL``, ``VISA_OPS_PORT``,
``VISA_OPS_SWEEP_INTERVAL``, ``VISA_OPS_POLICY`` (JSON: LifecyclePolicy settings),
``VISA_HUB_DB_URL`` (production's hub database, read-only use).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from visa_collab.hub_config import _add_role, _free_port, _get, _persisted, service_port_and_db
from visa_collab.roles import ADMIN_SCOPE

SERVICE = "visa-ops"
MAIL_SERVICE = "visa-ops-mail"

# What the service does through the hub's REST API (docs/operations.md).
SERVICE_SCOPES = [
    "list:users", "read:users", "read:users:name", "read:users:groups",  # owners, their facility roles
    "read:servers", "delete:servers",  # stop or delete an instance (admin action or rule)
    "admin:auth_state",  # the owner's e-mail address, kept in their auth state by the VISA authenticator
]
PLAN_POLICY_KEYS = ("lifetime_days", "auto_extend_days")


def hub_db_url(c: Any, env: Mapping[str, str]) -> str:
    """The hub's database as this process will open it: production's PostgreSQL URL (with the
    installed driver), the profile's ``db_url``, else JupyterHub's default file in the hub's cwd."""
    if env.get("VISA_HUB_DB_URL"):
        from visa_profiles.pg import installed_pg_driver, with_pg_driver

        return with_pg_driver(env["VISA_HUB_DB_URL"], installed_pg_driver())
    url = _get(c.JupyterHub, "db_url", "sqlite:///jupyterhub.sqlite")
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        url = f"sqlite:///{Path(url[len('sqlite:///'):]).resolve()}"
    return url


def plan_settings(plans: list[Mapping[str, Any]]) -> tuple[dict[str, str], dict[str, dict]]:
    """(plan id → backend, plan id → lifecycle rule) from the plan catalogue's dicts (pure)."""
    backends, rules = {}, {}
    for p in plans:
        if not isinstance(p, Mapping) or "id" not in p:
            continue
        backends[str(p["id"])] = str(p.get("backend", ""))
        rule = {k: int(p[k]) for k in PLAN_POLICY_KEYS if p.get(k)}
        if rule:
            rules[str(p["id"])] = rule
    return backends, rules


def public_url(c: Any, env: Mapping[str, str]) -> str:
    if env.get("VISA_OPS_PUBLIC_URL"):
        return env["VISA_OPS_PUBLIC_URL"].rstrip("/")
    bind = _get(c.JupyterHub, "bind_url", "")
    if bind:
        return bind.rstrip("/")
    return f"http://{_get(c.JupyterHub, 'ip', '127.0.0.1') or '127.0.0.1'}:{_get(c.JupyterHub, 'port', 8000)}"


def archiving_backends(c: Any) -> list[str]:
    """The configured backends that archive an instance before deleting it: the only ones whose
    instances lifecycle rules may delete (JupyterHub forgets a server even when its spawner refused)."""
    from visa_spawner.archives import can_archive
    from visa_spawner.spawner import BACKEND_CLASSES

    classes = dict(_get(c.VisaSpawner, "backend_classes", BACKEND_CLASSES))
    if not _get(c.VisaSpawner, "archive_on_delete", True):
        return []
    return sorted(name for name in classes if can_archive(name, classes, c))


def apply(
    c: Any, *, state_dir: str | os.PathLike, env: Mapping[str, str] | None = None, policy: dict | None = None,
    sweep_interval: float | None = None, python: str = sys.executable,
) -> None:
    """Configure the hub for the operations service. `policy`: LifecyclePolicy traits (JSON-able)
    merged over the plans' own ``lifetime_days`` / ``auto_extend_days``."""
    env = os.environ if env is None else env
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    port, db_url = service_port_and_db(state, env, "ops")
    backends, rules = plan_settings(list(_get(c.VisaSpawner, "plans", [])))
    policy = {**json.loads(env.get("VISA_OPS_POLICY") or "{}"), **(policy or {})}
    policy["plan_rules"] = {**rules, **policy.get("plan_rules", {})}
    archive_dir = _get(c.VisaSpawner, "archive_dir", "") or str(state / "archives")
    retention = _get(c.VisaSpawner, "archive_retention_days", 30.0)
    interval = sweep_interval if sweep_interval is not None else float(env.get("VISA_OPS_SWEEP_INTERVAL") or 300)

    environment = {
        "VISA_OPS_DB_URL": db_url,
        "VISA_OPS_HUB_DB_URL": hub_db_url(c, env),
        "VISA_OPS_COOKIE_SECRET": _persisted(state / "visa_ops_cookie_secret", lambda: secrets.token_hex(32)),
        "VISA_OPS_SWEEP_INTERVAL": str(interval),
        "VISA_OPS_ARCHIVE_DIR": archive_dir,
        "VISA_OPS_ARCHIVE_RETENTION_DAYS": str(retention),
        "VISA_OPS_POLICY": json.dumps(policy, sort_keys=True),
        "VISA_OPS_PLAN_BACKENDS": json.dumps(backends, sort_keys=True),
        "VISA_OPS_ARCHIVING_BACKENDS": json.dumps(archiving_backends(c)),
        "VISA_OPS_PLAN_SWITCH_FILE": _get(c.VisaSpawner, "plan_switch_file", "") or str(state / "plans-disabled.json"),
        "VISA_OPS_QUOTA_OVERRIDES_FILE": _get(c.VisaSpawner, "quota_overrides_file", ""),  # empty: not read by the hub
        "VISA_OPS_PUBLIC_URL": public_url(c, env),
    }
    for name in ("VISA_OPS_MAIL_FROM", "VISA_OPS_CLOCK_OFFSET"):
        if env.get(name):
            environment[name] = env[name]

    services = [s for s in _get(c.JupyterHub, "services", []) if s.get("name") not in (SERVICE, MAIL_SERVICE)]
    if env.get("VISA_OPS_SMTP_URL"):
        environment["VISA_OPS_SMTP_URL"] = env["VISA_OPS_SMTP_URL"]
    else:  # the demo: a local SMTP sink, a real SMTP server writing a Maildir
        mail_port = int(env.get("VISA_OPS_MAIL_PORT") or _persisted(state / "visa_ops_mail_port", _free_port))
        maildir = state / "outbox"
        environment["VISA_OPS_SMTP_URL"] = f"smtp://127.0.0.1:{mail_port}"
        environment["VISA_OPS_OUTBOX_MAILDIR"] = str(maildir)
        services.append({
            "name": MAIL_SERVICE,
            "command": [python, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{mail_port}",
                        "-c", "aiosmtpd.handlers.Mailbox", str(maildir)],
            "cwd": str(state),
            "info": {"description": "Demo mail sink: messages visa-ops sends, readable in the admin console"},
        })

    # admins' tokens carry custom:visa-admin when the hub defines it (visa_collab.hub_config does)
    oauth_scopes = [f"access:services!service={SERVICE}"]
    if ADMIN_SCOPE in _get(c.JupyterHub, "custom_scopes", {}):
        oauth_scopes.append(ADMIN_SCOPE)
    services.append({
        "name": SERVICE,
        "display": True,
        "url": f"http://127.0.0.1:{port}",
        "command": [python, "-m", "visa_ops.app"],
        "cwd": str(state),
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": oauth_scopes,
        "environment": environment,
        "info": {"description": "Instance lifetimes, warnings, extension requests, notifications, admin console"},
    })
    c.JupyterHub.services = services

    _add_role(c, {"name": SERVICE, "scopes": SERVICE_SCOPES, "services": [SERVICE]})
    _add_role(c, {"name": "user", "scopes": ["self", f"access:services!service={SERVICE}"]})


def refresh_archiving(c: Any) -> None:
    """Recompute what `apply` read of the archives from the config as it is now: a profile that sets a
    backend later (OpenStack's `stop_action`, which decides whether its instances can be archived) or the
    retention calls this last, since a sub-config loaded by `load_subconfig` does not see them."""
    for service in _get(c.JupyterHub, "services", []):
        if service.get("name") == SERVICE:
            service["environment"].update({
                "VISA_OPS_ARCHIVING_BACKENDS": json.dumps(archiving_backends(c)),
                "VISA_OPS_ARCHIVE_RETENTION_DAYS": str(_get(c.VisaSpawner, "archive_retention_days", 30.0)),
            })
