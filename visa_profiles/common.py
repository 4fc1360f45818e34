"""Hub and instance settings every VISA Hub profile shares (network, proxy, named servers,
pages, sandbox instances), so the demo and production profiles differ only in identity,
catalogue and database.

Why a function and not a config file to `load_subconfig`: its inputs (state dir, repository,
environment) are explicit, and it can be applied to a bare `Config()` in a test.
"""
from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import visa_authenticator
import visa_collab.hub_config
import visa_ops.hub_config
import visa_spawner
from visa_profiles.env import EnvReader
from visa_profiles.heap import DEFAULT_DELAY, freeze_after_start
from visa_spawner.backends.guest import phonehome
from visa_spawner.backends.qemu.image import DEFAULT_IMAGE_DIR, availability
from visa_spawner.course_pages import handlers as course_handlers
from visa_spawner.handlers import handlers as visa_handlers
from visa_spawner.handlers import named_server_limit
from visa_spawner.pool_handlers import CUSTOM_SCOPES as pool_scopes
from visa_spawner.spawner import DEFAULT_PLANS, check_plans

VM_PLAN = {"id": "vm", "display_name": "Virtual machine", "backend": "qemu", "cpus": 2, "memory_mb": 2048,
           "description": "A full virtual machine: 2 CPUs, 2 GB, its own desktop"}


def secret_file(state: Path, name: str, nbytes: int = 32) -> str:
    """A secret made once and kept in the state dir (0600), never logged."""
    path = state / name
    if not path.exists():
        path.write_text(secrets.token_hex(nbytes))
        path.chmod(0o600)
    return path.read_text().strip()


def private_sqlite_url(path: Path) -> str:
    """The SQLite URL of `path`, the file made 0600 first (SQLite gives its journal, WAL and
    shared-memory files the database's mode; it would create it 0644)."""
    from visa_collab.db import private_sqlite

    url = f"sqlite:///{path}"
    private_sqlite(url)
    return url


def prepare_state_dir(state: Path) -> Path:
    """The hub's own directory: traversable (sandbox homes live below), not listable."""
    state.mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o711)
    return state


def apply_hub_and_instances(c: Any, state: Path, repo: Path, env: Mapping[str, str]) -> None:
    """Hub process, proxy, named servers, VISA pages and sandbox instances.

    Environment: VISA_HUB_PORT (8000), VISA_HUB_API_PORT (8081), VISA_PROXY_API_PORT (8001),
    VISA_BIND_URL (overrides the public bind URL; else `jupyterhub --port` overrides VISA_HUB_PORT),
    VISA_INSTANCE_ENV, VISA_DATA_ROOT, VISA_HUB_GC_FREEZE_AFTER (seconds after the start when the
    objects made at start are frozen out of full garbage collections, 30; 0 never: visa_profiles/heap.py).
    """
    # -- hub -------------------------------------------------------------------------------
    if env.get("VISA_BIND_URL"):
        c.JupyterHub.bind_url = env["VISA_BIND_URL"]
    else:  # ip and port rather than bind_url, so `jupyterhub --port N` still wins over the profile
        c.JupyterHub.ip = "127.0.0.1"
        c.JupyterHub.port = int(env.get("VISA_HUB_PORT") or 8000)
    c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{env.get('VISA_HUB_API_PORT', '8081')}"
    c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
    # SameSite=Lax on every cookie (hub login, XSRF; instances and services get it as
    # JUPYTERHUB_COOKIE_OPTIONS): no login on another site's forms, images or frames (docs/security.md)
    c.JupyterHub.tornado_settings.update({"cookie_options": {"samesite": "Lax"}})
    c.JupyterHub.pid_file = str(state / "jupyterhub.pid")
    c.ConfigurableHTTPProxy.command = [str(repo / "node_modules" / ".bin" / "configurable-http-proxy")]
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env.get('VISA_PROXY_API_PORT', '8001')}"
    c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")
    c.ConfigurableHTTPProxy.auth_token = secret_file(state, "proxy_token")
    c.JupyterHub.cleanup_servers = False  # instances survive a hub restart and are found again
    # last_activity = real use only (issue 17): never copy the proxy's per-route traffic times,
    # where a desktop tab's VNC stream or Lab's polling looks like use; instances report real use
    # themselves (visa_instance/activity.py) through JUPYTERHUB_ACTIVITY_URL
    c.JupyterHub.last_activity_interval = 0
    freeze_after_start(gc_freeze_delay(env))

    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.named_server_limit_per_user = named_server_limit
    c.JupyterHub.redirect_to_server = False
    c.JupyterHub.default_url = "/hub/home"
    # VMs report boot stages (phonehome); courses: seat links, "Download my work" (course_pages)
    c.JupyterHub.extra_handlers = [*visa_handlers, *course_handlers, *phonehome.handlers]
    c.JupyterHub.custom_scopes = {**c.JupyterHub.get("custom_scopes", {}), **pool_scopes}  # warm pools (courses)
    c.JupyterHub.template_paths = [
        str(Path(visa_spawner.__file__).parent / "templates"),
        visa_authenticator.TEMPLATES_DIR,
    ]

    # -- instances ---------------------------------------------------------------------------
    c.JupyterHub.spawner_class = "visa"
    c.VisaSpawner.data_root = env.get("VISA_DATA_ROOT") or str(state / "data")
    c.VisaSpawner.start_timeout = 90
    c.VisaSpawner.http_timeout = 60
    c.SandboxBackend.state_dir = str(state / "sandbox")
    c.VisaSpawner.archive_dir = str(state / "archives")  # homes of deleted instances (visa_spawner/archives.py)
    c.VisaSpawner.plan_switch_file = str(state / "plans-disabled.json")  # plans switched off in the ops console
    c.VisaSpawner.quota_overrides_file = str(state / "quota-overrides.json")  # quotas set in the ops console
    c.SandboxBackend.instance_env = env.get("VISA_INSTANCE_ENV", "/opt/visahub/instance-env")
    apply_vm_plan(c, state, env)

    # -- collaboration: member roles, invitations, access requests, audit (docs/collaboration.md)
    visa_collab.hub_config.apply(c, state_dir=state)
    # -- operations: lifetimes, warnings, extension requests, banners (docs/operations.md)
    visa_ops.hub_config.apply(c, state_dir=state, env=env)


def gc_freeze_delay(env: Mapping[str, str]) -> float:
    """VISA_HUB_GC_FREEZE_AFTER, or stop the hub at start with a message naming it."""
    reader = EnvReader(env)
    delay = reader.number("VISA_HUB_GC_FREEZE_AFTER", DEFAULT_DELAY)
    if reader.problems:
        sys.exit(f"VISA Hub: {reader.problems[0]} (seconds; 0: never). See docs/operations.md.")
    return delay


def apply_vm_plan(c: Any, state: Path, env: Mapping[str, str]) -> None:
    """Offer the "Virtual machine" plan (qemu backend) when an image is built and QEMU is usable;
    otherwise say why on the home page, so an admin knows to run `make image`.

    Environment: VISA_IMAGE_DIR (the image's directory, holding `current`).
    """
    image_dir = env.get("VISA_IMAGE_DIR") or DEFAULT_IMAGE_DIR
    ok, why = availability(image_dir)
    c.QemuBackend.image_dir = image_dir
    c.QemuBackend.state_dir = str(state / "qemu")
    if not ok:
        c.VisaSpawner.plans = list(DEFAULT_PLANS)
        c.JupyterHub.template_vars = {"visa_plans_note": f"Virtual machines are not offered here: {why}."}
        return
    c.VisaSpawner.plans = [*DEFAULT_PLANS, VM_PLAN]
    c.VisaSpawner.start_timeout = 600  # a cold TCG boot on a busy host takes minutes
    c.QemuBackend.boot_timeout = 570  # below start_timeout: the backend's own message reaches the person


def exit_on_bad_plans(c: Any) -> None:
    """Stop the hub at start with a message naming the bad plan (the last line of a profile).

    VisaSpawner checks its plans too, but JupyterHub only creates a spawner when someone first looks
    at their servers: without this a typo in a plan would surface as a broken home page hours later.
    A site that adds plans in its own config file calls this after them.
    """
    try:
        check_plans(c)
    except ValueError as e:
        sys.exit(f"VISA Hub: bad VisaSpawner.plans: {e}")
