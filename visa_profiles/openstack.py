"""The production profile's OpenStack settings, from environment variables (pure).

Same contract as the identity settings (`visa_profiles.production`): every problem is
listed at once and the hub refuses to start half-configured. Nothing here talks to the cloud:
the backend finds a wrong cloud name or credentials at the first spawn and says so there.
Documented in docs/openstack.md (one row per variable).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from traitlets.config import Config

from visa_spawner.plans import parse_plans

from .env import EnvReader, SettingsError

#: a plan of the plans file without `backend` is an OpenStack plan; `flavor` names the Nova flavour
PLAN_EXAMPLE = '[{"id": "vm-medium", "display_name": "Medium VM", "cpus": 4, "memory_mb": 16384, ' \
               '"image": "visa-analysis", "flavor": "m1.large"}]'


def _read(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def _json_file(e: EnvReader, name: str, read_file: Callable[[str], str], kind: type) -> Any:
    """The JSON document in the file named by variable `name` (None when unset)."""
    path = e.get(name)
    if not path:
        return None
    try:
        value = json.loads(read_file(path))
    except OSError as err:
        e.problems.append(f"{name}: cannot read {path} ({err.strerror})")
        return None
    except ValueError as err:
        e.problems.append(f"{name}: {path} is not valid JSON ({err})")
        return None
    if not isinstance(value, kind):
        e.problems.append(f"{name}: {path} must hold a JSON {'list' if kind is list else 'object'}")
        return None
    return value


def openstack_enabled(env: Mapping[str, str]) -> bool:
    return bool((env.get("VISA_OPENSTACK_CLOUD") or "").strip())


def openstack_config(env: Mapping[str, str], base_plans: list[dict],
                     read_file: Callable[[str], str] = _read) -> Config:
    """Config for OpenStack plans next to `base_plans`. Raises SettingsError listing every problem."""
    e = EnvReader(env)
    c = Config()
    o = c.OpenStackBackend
    o.cloud = e.get("VISA_OPENSTACK_CLOUD")
    o.clouds_yaml = e.get("VISA_OPENSTACK_CLOUDS_YAML", "/etc/visahub/clouds.yaml")
    o.hub_id = e.get("VISA_OPENSTACK_HUB_ID")
    if not o.hub_id:
        e.problems.append("VISA_OPENSTACK_HUB_ID is required (it names this hub's servers)")
    elif not o.hub_id.replace("-", "").isalnum() or len(o.hub_id) > 20:
        e.problems.append("VISA_OPENSTACK_HUB_ID must be letters, digits and '-', at most 20")
    o.networks = e.get("VISA_OPENSTACK_NETWORK", "auto")
    if e.get("VISA_OPENSTACK_FLOATING_IP_NETWORK"):
        o.floating_ip_network = e.get("VISA_OPENSTACK_FLOATING_IP_NETWORK")
        o.address_source = "floating-ip"
    connect = e.get("VISA_HUB_CONNECT_URL")
    if not connect.startswith(("http://", "https://")):
        e.problems.append("VISA_HUB_CONNECT_URL is required with OpenStack: the hub's URL as instances "
                          "reach it, e.g. http://hub.internal.example:8081")
    c.JupyterHub.hub_connect_url = connect
    if e.get("VISA_HUB_API_BIND_URL"):  # the hub API must listen where instances reach it
        c.JupyterHub.hub_bind_url = e.get("VISA_HUB_API_BIND_URL")
    o.build_timeout = e.number("VISA_OPENSTACK_BUILD_TIMEOUT", 300, minimum=10)
    o.boot_timeout = e.number("VISA_OPENSTACK_BOOT_TIMEOUT", 600, minimum=10)
    c.VisaSpawner.start_timeout = int(o.build_timeout + o.boot_timeout + 60)
    o.max_concurrent_calls = int(e.number("VISA_OPENSTACK_MAX_CONCURRENT_CALLS", 8, minimum=1))
    o.stop_action = "shelve" if e.flag("VISA_OPENSTACK_SHELVE", False) else "delete"
    mounts = e.get("VISA_OPENSTACK_MOUNT_COMMAND")
    if mounts:
        try:
            argv = json.loads(mounts)
            assert isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)
            o.mount_templates = [argv]
        except (ValueError, AssertionError):
            e.problems.append('VISA_OPENSTACK_MOUNT_COMMAND must be a JSON list of strings, e.g. '
                              '["mount", "-t", "nfs", "-o", "ro", "nas:/exp/{proposal}", "{mount_point}"]')
    groups = _json_file(e, "VISA_OPENSTACK_SECURITY_GROUPS_FILE", read_file, list)
    if groups is not None:
        o.security_group_policies = groups
    plans = _json_file(e, "VISA_OPENSTACK_PLANS_FILE", read_file, list)
    if plans is None and not e.get("VISA_OPENSTACK_PLANS_FILE"):
        e.problems.append(f"VISA_OPENSTACK_PLANS_FILE is required: a JSON file like {PLAN_EXAMPLE}")
    if plans:
        entries = [{"backend": "openstack", **p} if isinstance(p, dict) else p for p in plans]
        try:
            if not all(isinstance(p, dict) for p in entries):
                raise ValueError("each plan must be a JSON object")
            parse_plans([*base_plans, *entries], {"sandbox", "qemu", "openstack"})
        except ValueError as err:
            e.problems.append(f"VISA_OPENSTACK_PLANS_FILE: {err}")
        else:
            o.flavors = {p["id"]: str(p["flavor"]) for p in entries if p.get("flavor")}
            c.VisaSpawner.plans = [*base_plans, *({k: v for k, v in p.items() if k != "flavor"} for p in entries)]
    c.Reconciler.interval = e.number("VISA_OPENSTACK_RECONCILE_INTERVAL", 60, minimum=5)
    c.Reconciler.grace = e.number("VISA_OPENSTACK_RECONCILE_GRACE", 300, minimum=0)
    if e.problems:
        raise SettingsError("; ".join(e.problems))
    return c
