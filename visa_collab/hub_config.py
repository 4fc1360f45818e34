"""Hub configuration for collaboration, as one call: ``visa_collab.hub_config.apply(c, ...)``.

Sets, on top of whatever the profile already configured (lists and dicts are extended, never
replaced):

* ``JupyterHub.custom_scopes``: the role scopes (`visa_collab.roles.CUSTOM_SCOPES`);
* ``JupyterHub.services``: the hub-managed ``visa-collab`` service (OAuth, no confirmation
  page), its database and cookie secret under ``state_dir``;
* ``JupyterHub.load_roles``: the service's permissions; ``access:services!service=visa-collab``
  added to the default ``user`` role; ``custom:visa-admin`` for the ``role:admin`` group;
* ``Spawner.server_token_scopes``: adds ``read:shares!server``, with which the instance reads
  its members' roles from its shares (JupyterHub 6.1 does not put a share's custom scopes in
  members' OAuth tokens);
* ``Spawner.oauth_client_allowed_scopes``: lets the role scopes (``!server``) into the
  instance's OAuth tokens — used for ``custom:visa-admin`` (a role) today, and for share
  scopes should the hub ever pass them;
* ``Spawner.environment``: ``VISA_COLLAB_URL`` (the service as instances reach it: by default
  the hub's relay, `visa_collab.instance_relay`) and ``VISA_COLLAB_PREFIX`` (as browsers reach it);
* ``JupyterHub.extra_handlers``: that relay, on the hub's API (``/hub/api/visa/collab/``).
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from pathlib import Path
from typing import Any

from . import instance_relay
from .db import private_sqlite
from .roles import ADMIN_SCOPE, CUSTOM_SCOPES, ROLE_SCOPES, oauth_client_allowed_scopes

SERVICE = "visa-collab"

# What the service does through the hub's REST API (README of the service: docs/collaboration.md).
SERVICE_SCOPES = [
    "shares", "read:shares", "users:shares", "read:users:shares",  # grant, revoke, list shares
    "access:servers", *ROLE_SCOPES.values(),  # a share may only carry scopes its granter holds
    "list:users", "read:users", "read:users:name", "read:users:groups",  # people, their groups
    "read:servers",  # instances and their proposal (user_options)
    "start:servers", "delete:servers",  # restart an instance when its owner asks (after removing a member)
    "list:groups", "read:groups", "read:groups:name",  # proposal teams
]


# JupyterHub's default scopes for $JUPYTERHUB_API_TOKEN (its "server" role)
SERVER_TOKEN_DEFAULT = ("users:activity!user", "access:servers!server")


def _persisted(path: Path, make: Any) -> str:
    if not path.exists():
        path.write_text(str(make()))
        path.chmod(0o600)
    return path.read_text().strip()


def service_port_and_db(state: Path, env: Any, name: str) -> tuple[int, str]:
    """A hub-managed service's port and database: ``$VISA_<NAME>_PORT`` / ``$VISA_<NAME>_DB_URL``
    win; else a port chosen once and kept in `state` (instances that outlive a hub restart still
    reach it) and a private SQLite file there. A PostgreSQL URL gets the driver installed here."""
    key = name.upper()
    port = int(env.get(f"VISA_{key}_PORT") or _persisted(state / f"visa_{name}_port", _free_port))
    db_url = env.get(f"VISA_{key}_DB_URL") or f"sqlite:///{state / f'visa_{name}.sqlite'}"
    if db_url.startswith("postgresql://"):
        from visa_profiles.pg import installed_pg_driver, with_pg_driver

        db_url = with_pg_driver(db_url, installed_pg_driver())
    private_sqlite(db_url)
    return port, db_url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(section: Any, name: str, default: Any) -> Any:
    """A config value set by the profile, or `default` (unset traits are lazy placeholders)."""
    return section[name] if name in section else default


def _add_role(c: Any, role: dict) -> None:
    roles = [dict(r) for r in _get(c.JupyterHub, "load_roles", [])]
    for existing in roles:
        if existing.get("name") == role["name"]:
            existing["scopes"] = sorted(set(existing.get("scopes", [])) | set(role.get("scopes", [])))
            for key in ("users", "groups", "services"):
                if role.get(key):
                    existing[key] = sorted(set(existing.get(key, [])) | set(role[key]))
            break
    else:
        roles.append(role)
    c.JupyterHub.load_roles = roles


def apply(
    c: Any, *, state_dir: str | os.PathLike, port: int | None = None, db_url: str | None = None,
    instance_url: str | None = None, reconcile_interval: float = 60.0, python: str = sys.executable,
) -> None:
    """Configure the hub for shared instances.

    `state_dir`: where the service keeps its SQLite database, cookie secret and port (the hub's
    own state directory is fine). `port`: the service's port on 127.0.0.1 (default:
    ``$VISA_COLLAB_PORT``, else one chosen once and kept in `state_dir`, so instances that
    survive a hub restart still reach it). `instance_url`: the service's URL as instances reach
    it (default: the hub's relay on the hub API URL each instance is given, which sandboxes,
    qemu VMs and OpenStack servers all reach: `visa_collab.instance_relay`).
    """
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    if port is None:
        port = int(os.environ.get("VISA_COLLAB_PORT") or _persisted(state / "visa_collab_port", _free_port))
    db_url = db_url or f"sqlite:///{state / 'visa_collab.sqlite'}"
    base_url = _get(c.JupyterHub, "base_url", "/")
    prefix = f"{base_url.rstrip('/')}/services/{SERVICE}/"
    collab_url: Any = instance_url or instance_relay.instance_url  # a callable: per spawner

    scopes = dict(_get(c.JupyterHub, "custom_scopes", {}))
    scopes.update(CUSTOM_SCOPES)
    c.JupyterHub.custom_scopes = scopes

    services = [s for s in _get(c.JupyterHub, "services", []) if s.get("name") != SERVICE]
    services.append({
        "name": SERVICE,
        "display": True,
        "url": f"http://127.0.0.1:{port}",
        "command": [python, "-m", "visa_collab.app"],
        "cwd": str(state),
        "oauth_no_confirm": True,
        "environment": {
            "VISA_COLLAB_DB_URL": db_url,
            "VISA_COLLAB_COOKIE_SECRET": _persisted(state / "visa_collab_cookie_secret", lambda: secrets.token_hex(32)),
            "VISA_COLLAB_RECONCILE_INTERVAL": str(reconcile_interval),
        },
        "info": {"description": "Share instances: members, invitations, access requests, audit log"},
    })
    c.JupyterHub.services = services

    _add_role(c, {"name": SERVICE, "scopes": SERVICE_SCOPES, "services": [SERVICE]})
    _add_role(c, {"name": "user", "scopes": ["self", f"access:services!service={SERVICE}"]})
    _add_role(c, {"name": "visa-admin", "scopes": [ADMIN_SCOPE], "groups": ["role:admin"]})

    previous = _get(c.Spawner, "oauth_client_allowed_scopes", [])
    if callable(previous):
        # JupyterHub 6.1 json-dumps this trait into the server's environment: a callable
        # breaks every spawn, so say so here rather than at the first spawn
        raise ValueError("Spawner.oauth_client_allowed_scopes must be a list to combine it with visa_collab")
    c.Spawner.oauth_client_allowed_scopes = sorted(set(previous) | set(oauth_client_allowed_scopes()))

    # the instance reads its own shares (member roles): JupyterHub 6.1 keeps a share's custom
    # scopes out of members' OAuth tokens (see visa_instance.authorizer)
    token_scopes = _get(c.Spawner, "server_token_scopes", None) or list(SERVER_TOKEN_DEFAULT)
    if callable(token_scopes):
        raise ValueError("Spawner.server_token_scopes must be a list to combine it with visa_collab")
    c.Spawner.server_token_scopes = sorted(set(token_scopes) | {"read:shares!server"})

    env = dict(_get(c.Spawner, "environment", {}))
    env.update({"VISA_COLLAB_URL": collab_url, "VISA_COLLAB_PREFIX": prefix})
    c.Spawner.environment = env

    extra = [h for h in _get(c.JupyterHub, "extra_handlers", []) if h not in instance_relay.handlers]
    c.JupyterHub.extra_handlers = [*extra, *instance_relay.handlers]
