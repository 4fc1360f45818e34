"""``python -m visa_collab.app``: the collaboration service, run and managed by the hub.

The hub starts it with the usual service environment (``JUPYTERHUB_SERVICE_URL``,
``JUPYTERHUB_SERVICE_PREFIX``, ``JUPYTERHUB_API_URL``, ``JUPYTERHUB_API_TOKEN``, OAuth client
settings); `visa_collab.hub_config.apply` adds ``VISA_COLLAB_DB_URL`` and the intervals.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import secrets
import signal
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuthCallbackHandler
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.log import enable_pretty_logging

from . import db
from .collab import Collaboration
from .handlers import make_handlers
from .hubapi import HubAPI
from .metrics import metrics_handlers, registry_for
from .push import push_handlers

log = logging.getLogger("visa_collab")


def log_request(handler: web.RequestHandler) -> None:
    """Access log without query strings (invitation codes, tokens)."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING
    if status >= 500:
        level = logging.ERROR
    r = handler.request
    log.log(level, "%d %s %s %.1fms", status, r.method, r.path, 1000.0 * r.request_time())


def make_app(collab: Collaboration, prefix: str, hub_prefix: str, cookie_secret: bytes,
             events_keepalive: float = 30.0) -> web.Application:
    return web.Application(
        make_handlers(prefix, HubOAuthCallbackHandler) + push_handlers(prefix) + metrics_handlers(prefix),
        collab=collab, metrics_registry=registry_for(collab), service_prefix=prefix, hub_prefix=hub_prefix,
        cookie_secret=cookie_secret,
        events_keepalive=events_keepalive,
        log_function=log_request, xsrf_cookies=False,  # JupyterHub's own XSRF rules (HubOAuth)
    )


def raise_open_files_limit() -> None:
    """Each open page holds an event stream (a socket here, one at the proxy): 2,000 pages need
    more than the usual soft limit of 1,024 descriptors, so take what the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def keep_reconciling(collab: Collaboration, interval: float) -> None:
    """Every `interval` s: revoke grants of people who left the proposal (errors logged, never fatal)."""
    while True:
        await asyncio.sleep(interval)
        try:
            with collab.hub.fresh():  # who left a proposal is read from the hub, not a cache
                changed = await collab.reconcile()
            if changed:
                log.info("Reconciliation changed %d grant(s)", changed)
        except Exception:
            log.exception("Reconciliation failed; trying again in %ss", interval)


async def until_stopped() -> None:
    """Return when the hub (or a person) asks the service to stop: SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def main_async(args: argparse.Namespace) -> None:
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/visa-collab/")
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
    hub_prefix = url_path_join(os.environ.get("JUPYTERHUB_BASE_URL", "/"), "hub/")
    engine = db.connect(args.db_url)
    db.migrate(engine, log=log)
    hub = HubAPI(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"], cache_ttl=args.hub_cache_ttl)
    collab = Collaboration(engine, hub, service_prefix=prefix, presence_ttl=args.presence_ttl,
                           request_ttl=args.request_ttl, owner_page_ttl=args.owner_page_ttl)
    secret = os.environ.get("VISA_COLLAB_COOKIE_SECRET")
    app = make_app(collab, prefix, hub_prefix, bytes.fromhex(secret) if secret else secrets.token_bytes(32),
                   events_keepalive=args.events_keepalive)
    app.listen(url.port or 80, url.hostname or "127.0.0.1")
    log.info("VISA collaboration service at %s%s (database revision %s)", url.geturl().rstrip("/"), prefix, db.head())
    task = asyncio.ensure_future(keep_reconciling(collab, args.reconcile_interval))
    await until_stopped()
    task.cancel()
    engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="visa-collab", description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", default=os.environ.get("VISA_COLLAB_DB_URL", "sqlite:///visa_collab.sqlite"))
    parser.add_argument("--reconcile-interval", type=float,
                        default=float(os.environ.get("VISA_COLLAB_RECONCILE_INTERVAL", "60")))
    parser.add_argument("--presence-ttl", type=float, default=float(os.environ.get("VISA_COLLAB_PRESENCE_TTL", "45")))
    parser.add_argument("--owner-page-ttl", type=float,
                        default=float(os.environ.get("VISA_COLLAB_OWNER_PAGE_TTL", "90")))
    parser.add_argument("--request-ttl", type=float, default=float(os.environ.get("VISA_COLLAB_REQUEST_TTL", "300")))
    parser.add_argument("--hub-cache-ttl", type=float, default=float(os.environ.get("VISA_COLLAB_HUB_CACHE_TTL", "30")),
                        help="how long pages that only show something may use a hub look-up (s)")
    parser.add_argument("--events-keepalive", type=float,
                        default=float(os.environ.get("VISA_COLLAB_EVENTS_KEEPALIVE", "30")),
                        help="longest silence on an open event stream (s)")
    args = parser.parse_args(argv)
    enable_pretty_logging()
    raise_open_files_limit()
    logging.getLogger().setLevel(logging.INFO)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
