"""Hub configuration for training, as one call: ``visa_training.hub_config.apply(c, state_dir=..., courses=...)``.

Adds, on top of what the profile configured (lists and dicts extended, never replaced):

* ``JupyterHub.services``: the hub-managed ``visa-training`` service (hub OAuth, no confirmation
  page) with its settings in ``VISA_TRAINING_*`` variables (docs/training.md);
* ``JupyterHub.load_roles``: the service's scopes (below); ``access:services!service=visa-training``
  for users (trainers' pages, participants' "My courses");
* ``VisaSpawner.training_api_url`` / ``VisaSpawner.training_api_token``: how the hub process asks
  the service about a course (the internal API), with a secret made once in the state directory
  (``visa_training_internal_token``, 0600).

Environment read here: ``VISA_TRAINING_DB_URL`` (default: SQLite, 0600, in the state directory),
``VISA_TRAINING_COURSES`` (the courses' YAML; default: the `courses` argument), ``VISA_TRAINING_PORT``,
``VISA_TRAINING_POOL_SPARE``, ``VISA_TRAINING_SWEEP_INTERVAL``, ``VISA_TRAINING_START_TIMEOUT``,
``VISA_TRAINING_START_INTERVAL``, ``VISA_TRAINING_START_CONCURRENCY`` (numbers checked here: a bad
one stops the hub with a message naming it, rather than the service failing later out of sight).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from visa_collab.hub_config import SERVICE as COLLAB_SERVICE
from visa_collab.hub_config import _add_role, _get, _persisted, service_port_and_db
from visa_collab.roles import ADMIN_SCOPE
from visa_profiles.env import EnvReader

from .grid import proxy_url
from .pacing import DEFAULT_CONCURRENCY, DEFAULT_INTERVAL

SERVICE = "visa-training"
POOL_SCOPE = "custom:visa-pools"  # the warm pools' hub API (visa_spawner.pool_handlers)

# What the service does through the hub's REST API (docs/training.md, "The service's scopes").
SERVICE_SCOPES = [
    "list:users", "read:users", "read:users:name", "read:users:groups",  # participants, trainers, admins
    "admin:users",  # create a participant's hub user before their first login; delete guests at the end
    "read:servers", "servers",  # create and start course instances; watch them become ready
    "access:services!service=visa-collab",  # let a course's trainers watch and help its instances (no "tokens":
    # it would let this service mint any user's token, administrators' included)
    "delete:servers",  # remove a guest's archives (hub API /hub/api/visa/archives, scope delete:servers)
    "access:servers", "admin:servers",  # the grid: thumbnails and presence from instances; Reset (visa_spawner.reset)
]


# the service's numeric settings: (default, minimum); passed on only when set
NUMBERS = {"VISA_TRAINING_POOL_SPARE": (2, 0), "VISA_TRAINING_SWEEP_INTERVAL": (300, 1),
           "VISA_TRAINING_START_TIMEOUT": (300, 1), "VISA_TRAINING_START_INTERVAL": (DEFAULT_INTERVAL, 0),
           "VISA_TRAINING_START_CONCURRENCY": (DEFAULT_CONCURRENCY, 1)}


def numeric_settings(env: Mapping[str, str]) -> dict[str, str]:
    """The numeric settings that are set, checked; the hub stops with every bad one named."""
    reader = EnvReader(env)
    out = {name: f"{reader.number(name, default, minimum):g}" for name, (default, minimum) in NUMBERS.items()
           if reader.get(name)}
    if reader.problems:
        sys.exit("VISA Hub: bad training setting(s): " + "; ".join(reader.problems) + ". See docs/training.md.")
    return out


def plan_list(c: Any) -> list[dict]:
    """The hub's plans as the service needs them: id, display name, backend, allowed roles."""
    out = []
    for p in _get(c.VisaSpawner, "plans", []):
        if isinstance(p, Mapping) and "id" in p:
            out.append({"id": str(p["id"]), "display_name": str(p.get("display_name") or p["id"]),
                        "backend": str(p.get("backend", "")), "roles": list(p.get("roles") or [])})
    return out


def collab_url(c: Any) -> str:
    """The collaboration service's own address (the service calls it directly, not through the proxy)."""
    for s in _get(c.JupyterHub, "services", []):
        if s.get("name") == COLLAB_SERVICE and s.get("url"):
            base = _get(c.JupyterHub, "base_url", "/").rstrip("/")
            return f"{s['url'].rstrip('/')}{base}/services/{COLLAB_SERVICE}"
    return ""


def apply(c: Any, *, state_dir: str | os.PathLike, courses: str | os.PathLike | None = None,
          materials_root: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
          python: str = sys.executable) -> None:
    """Configure the hub for training. `courses`: the courses' YAML (``$VISA_TRAINING_COURSES`` wins);
    `materials_root`: the folder whose subfolders a course made on the page may use as materials
    (default: the folder ``courses/`` next to the YAML). Call it after the plans are set."""
    env = os.environ if env is None else env
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    port, db_url = service_port_and_db(state, env, "training")
    courses_file = env.get("VISA_TRAINING_COURSES") or (str(courses) if courses else "")
    if materials_root is None and courses_file:
        materials_root = Path(courses_file).resolve().parent / "courses"
    internal_token = _persisted(state / "visa_training_internal_token", lambda: secrets.token_urlsafe(32))
    base_url = _get(c.JupyterHub, "base_url", "/").rstrip("/")
    prefix = f"{base_url}/services/{SERVICE}/"

    environment = {
        "VISA_TRAINING_DB_URL": db_url,
        "VISA_TRAINING_COURSES": courses_file,
        "VISA_TRAINING_MATERIALS_ROOT": str(materials_root or ""),
        "VISA_TRAINING_PLANS": json.dumps(plan_list(c), sort_keys=True),
        "VISA_TRAINING_CATALOGUE": str(_get(c.FileCatalogue, "path", "")),
        "VISA_TRAINING_COLLAB_URL": collab_url(c),
        "VISA_TRAINING_ARCHIVE_DIR": str(_get(c.VisaSpawner, "archive_dir", "") or ""),
        "VISA_TRAINING_INTERNAL_TOKEN": internal_token,
        "VISA_TRAINING_PROXY_URL": proxy_url(str(_get(c.JupyterHub, "bind_url", "") or ""),
                                             str(_get(c.JupyterHub, "ip", "") or ""),
                                             int(_get(c.JupyterHub, "port", 0) or 0)),  # the grid (visa_training.grid)
        "VISA_TRAINING_COOKIE_SECRET": _persisted(state / "visa_training_cookie_secret", lambda: secrets.token_hex(32)),
        "VISA_TRAINING_SEAT_SECRET": _persisted(state / "visa_training_seat_secret", lambda: secrets.token_hex(32)),
    }
    environment.update(numeric_settings(env))
    for name in ("VISA_TRAINING_CLOCK_OFFSET", "VISA_TRAINING_CREATOR_ROLES"):
        if env.get(name):
            environment[name] = env[name]

    oauth_scopes = [f"access:services!service={SERVICE}"]
    if ADMIN_SCOPE in _get(c.JupyterHub, "custom_scopes", {}):
        oauth_scopes.append(ADMIN_SCOPE)
    services = [s for s in _get(c.JupyterHub, "services", []) if s.get("name") != SERVICE]
    services.append({
        "name": SERVICE,
        "display": True,
        "url": f"http://127.0.0.1:{port}",
        "command": [python, "-m", "visa_training.app"],
        "cwd": str(state),
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": oauth_scopes,
        "environment": environment,
        "info": {"description": "Courses: participants, seats, start the class, the trainer's grid"},
    })
    c.JupyterHub.services = services

    scopes = [*SERVICE_SCOPES]
    if POOL_SCOPE in _get(c.JupyterHub, "custom_scopes", {}):
        scopes.append(POOL_SCOPE)
    else:  # defined here when the pools' part has not defined it (a role may only name known scopes)
        custom = dict(_get(c.JupyterHub, "custom_scopes", {}))
        custom[POOL_SCOPE] = {"description": "Fill, read and drain the warm pools of pre-started instances."}
        c.JupyterHub.custom_scopes = custom
        scopes.append(POOL_SCOPE)
    _add_role(c, {"name": SERVICE, "scopes": scopes, "services": [SERVICE]})
    _add_role(c, {"name": "user", "scopes": ["self", f"access:services!service={SERVICE}"]})

    # the warm pool copies only materials below these folders (WarmPool.materials_roots): the courses'
    # YAML folder (its courses' materials are relative to it) and the root of courses made on the page
    roots = [str(Path(courses_file).resolve().parent)] if courses_file else []
    roots += [str(Path(materials_root).resolve())] if materials_root else []
    known = list(_get(c.WarmPool, "materials_roots", []) or [])
    if roots:
        from visa_spawner.backends.sandbox.pool import REPO_HUB_CONFIG

        c.WarmPool.materials_roots = list(dict.fromkeys([*(known or [REPO_HUB_CONFIG]), *roots]))
    c.VisaSpawner.training_api_url = f"http://127.0.0.1:{port}{prefix}api/internal/"
    c.VisaSpawner.training_api_token = internal_token
