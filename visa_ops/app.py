"""``python -m visa_ops.app`` (or ``visa-ops``): the facility operations service, run by the hub.

The hub starts it with the usual service environment (``JUPYTERHUB_SERVICE_URL``,
``JUPYTERHUB_SERVICE_PREFIX``, ``JUPYTERHUB_API_URL``, ``JUPYTERHUB_API_TOKEN``, OAuth client);
`visa_ops.hub_config.apply` adds the ``VISA_OPS_*`` settings (docs/operations.md lists them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuthCallbackHandler
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.log import enable_pretty_logging
from traitlets.config import Config

from visa_collab.app import log_request, until_stopped
from visa_collab.db import now as utcnow

from .handlers import make_handlers
from .mail import Mailer
from .ops import Operations, OpsHubAPI
from .policy import LifecyclePolicy
from .store import Store
from .sweep import keep_sweeping

log = logging.getLogger("visa_ops")

__all__ = ["make_app", "make_handlers", "offset_clock"]


def make_app(ops: Operations, prefix: str, hub_prefix: str, cookie_secret: bytes) -> web.Application:
    return web.Application(
        make_handlers(prefix, HubOAuthCallbackHandler),
        ops=ops, service_prefix=prefix, hub_prefix=hub_prefix, cookie_secret=cookie_secret,
        log_function=log_request, xsrf_cookies=False,  # JupyterHub's own XSRF rules (HubOAuth)
        outbox_maildir=os.environ.get("VISA_OPS_OUTBOX_MAILDIR", ""),
    )


def offset_clock(offset_seconds: float) -> Callable[[], datetime]:
    """Now (naive UTC) moved by a fixed offset: the hub-level tests' way to jump days ahead."""
    if not offset_seconds:
        return utcnow
    return lambda: utcnow() + timedelta(seconds=offset_seconds)


def policy_config(raw: str) -> Config:
    """``VISA_OPS_POLICY`` (JSON: LifecyclePolicy trait → value) as traitlets config."""
    c = Config()
    for name, value in (json.loads(raw) if raw else {}).items():
        setattr(c.LifecyclePolicy, name, value)
    return c


async def main_async(args: argparse.Namespace) -> None:
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/visa-ops/")
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10102"))
    hub_prefix = url_path_join(os.environ.get("JUPYTERHUB_BASE_URL", "/"), "hub/")
    clock = offset_clock(float(os.environ.get("VISA_OPS_CLOCK_OFFSET", "0") or 0))
    policy = LifecyclePolicy(config=policy_config(os.environ.get("VISA_OPS_POLICY", "")), clock=clock)
    store = Store.from_url(args.db_url, clock=clock)
    hub = OpsHubAPI(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"])
    ops = Operations(store, policy, hub, args.hub_db_url, Mailer(),
                     plan_backends=json.loads(os.environ.get("VISA_OPS_PLAN_BACKENDS", "") or "{}"),
                     public_url=os.environ.get("VISA_OPS_PUBLIC_URL", ""),
                     archiving_backends=json.loads(os.environ["VISA_OPS_ARCHIVING_BACKENDS"])
                     if os.environ.get("VISA_OPS_ARCHIVING_BACKENDS") else None)
    secret = os.environ.get("VISA_OPS_COOKIE_SECRET")
    app = make_app(ops, prefix, hub_prefix, bytes.fromhex(secret) if secret else secrets.token_bytes(32))
    app.listen(url.port or 80, url.hostname or "127.0.0.1")
    log.info("VISA operations service at %s%s (mail via %s)", url.geturl().rstrip("/"), prefix, ops.mailer.describe())
    task = asyncio.ensure_future(keep_sweeping(ops, args.sweep_interval, args.archive_dir or None,
                                               args.archive_retention_days))
    await until_stopped()
    task.cancel()
    store.engine.dispose()


def main(argv: list[str] | None = None) -> None:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="visa-ops", description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", default=env("VISA_OPS_DB_URL", "sqlite:///visa_ops.sqlite"))
    parser.add_argument("--hub-db-url", default=env("VISA_OPS_HUB_DB_URL", "sqlite:///jupyterhub.sqlite"),
                        help="The hub's database, read only.")
    parser.add_argument("--sweep-interval", type=float, default=float(env("VISA_OPS_SWEEP_INTERVAL", "300")))
    parser.add_argument("--archive-dir", default=env("VISA_OPS_ARCHIVE_DIR", ""))
    parser.add_argument("--archive-retention-days", type=float,
                        default=float(env("VISA_OPS_ARCHIVE_RETENTION_DAYS", "30")))
    args = parser.parse_args(argv)
    enable_pretty_logging()
    logging.getLogger().setLevel(logging.INFO)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
