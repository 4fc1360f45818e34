"""``python -m visa_training.app`` (or ``visa-training``): the training service, run by the hub.

The hub starts it with the usual service environment (``JUPYTERHUB_SERVICE_URL``,
``JUPYTERHUB_SERVICE_PREFIX``, ``JUPYTERHUB_API_URL``, ``JUPYTERHUB_API_TOKEN``, OAuth client);
`visa_training.hub_config.apply` adds the ``VISA_TRAINING_*`` settings (docs/training.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuthCallbackHandler
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.log import enable_pretty_logging

from visa_collab.app import log_request, until_stopped

from . import grid
from .course import CourseError
from .handlers import api_handlers
from .hubclient import TrainingHub
from .pacing import DEFAULT_CONCURRENCY, DEFAULT_INTERVAL
from .pages import page_handlers
from .store import Store
from .training import Directory, Training

log = logging.getLogger("visa_training")


def make_app(training: Training, prefix: str, hub_prefix: str, cookie_secret: bytes,
             internal_token: str) -> web.Application:
    settings = dict(training=training, service_prefix=prefix, hub_prefix=hub_prefix, hub_public_prefix=hub_prefix,
                    cookie_secret=cookie_secret, internal_token=internal_token, log_function=log_request,
                    xsrf_cookies=False)  # JupyterHub's own XSRF rules (HubOAuth)
    routes = [*api_handlers(prefix), *grid.grid_routes(prefix, **settings), *page_handlers(prefix),
              (f"{prefix}oauth_callback", HubOAuthCallbackHandler)]
    return web.Application(routes, **settings)


def offset_clock(offset_seconds: float) -> Callable[[], datetime]:
    """Now (aware UTC) moved by a fixed offset: hub-level tests jump past a course's end."""
    return lambda: datetime.now(UTC) + timedelta(seconds=offset_seconds)


async def keep_sweeping(training: Training, interval: float) -> None:
    """Every `interval` s: the end of courses (errors logged, never fatal)."""
    while True:
        try:
            removed = await training.sweep()
            if removed:
                log.info("Course sweep: %d guest account(s) deleted", len(removed))
        except Exception:
            log.exception("Course sweep failed; trying again in %ss", interval)
        await asyncio.sleep(interval)


async def main_async(args: argparse.Namespace) -> None:
    env = os.environ
    prefix = env.get("JUPYTERHUB_SERVICE_PREFIX", "/services/visa-training/")
    url = urlparse(env.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10103"))
    hub_prefix = url_path_join(env.get("JUPYTERHUB_BASE_URL", "/"), "hub/")
    clock = offset_clock(float(env.get("VISA_TRAINING_CLOCK_OFFSET", "0") or 0))
    seat_secret = env.get("VISA_TRAINING_SEAT_SECRET")
    store = Store.from_url(args.db_url, bytes.fromhex(seat_secret) if seat_secret else secrets.token_bytes(32), clock)
    hub = TrainingHub(env["JUPYTERHUB_API_URL"], env["JUPYTERHUB_API_TOKEN"], timeout=30.0)
    training = Training(
        store, hub, plans=json.loads(env.get("VISA_TRAINING_PLANS") or "[]"),
        directory=Directory(env.get("VISA_TRAINING_CATALOGUE", "")),
        materials_root=env.get("VISA_TRAINING_MATERIALS_ROOT", ""), collab_url=env.get("VISA_TRAINING_COLLAB_URL", ""),
        pool_spare=int(float(env.get("VISA_TRAINING_POOL_SPARE") or 2)),  # numbers checked by hub_config.apply
        start_timeout=float(env.get("VISA_TRAINING_START_TIMEOUT") or 300),
        start_interval=float(env.get("VISA_TRAINING_START_INTERVAL") or DEFAULT_INTERVAL),
        start_concurrency=int(float(env.get("VISA_TRAINING_START_CONCURRENCY") or DEFAULT_CONCURRENCY)),
        archive_dir=env.get("VISA_TRAINING_ARCHIVE_DIR", ""), clock=clock,
        creator_roles=(env.get("VISA_TRAINING_CREATOR_ROLES") or "STAFF").replace(",", " ").split())
    if args.courses:
        try:
            loaded = await training.load_yaml(args.courses)
            log.info("%d course(s) loaded from %s", len(loaded), args.courses)
        except CourseError as e:  # the pages still serve the courses already stored
            log.error("The courses of %s were not loaded: %s", args.courses, e)
    secret = env.get("VISA_TRAINING_COOKIE_SECRET")
    app = make_app(training, prefix, hub_prefix, bytes.fromhex(secret) if secret else secrets.token_bytes(32),
                   env.get("VISA_TRAINING_INTERNAL_TOKEN", ""))
    app.listen(url.port or 80, url.hostname or "127.0.0.1")
    log.info("VISA training service at %s%s", url.geturl().rstrip("/"), prefix)
    task = asyncio.ensure_future(keep_sweeping(training, args.sweep_interval))
    await until_stopped()
    task.cancel()
    store.engine.dispose()


def main(argv: list[str] | None = None) -> None:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="visa-training", description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", default=env("VISA_TRAINING_DB_URL", "sqlite:///visa_training.sqlite"))
    parser.add_argument("--courses", default=env("VISA_TRAINING_COURSES", ""), help="The courses' YAML file.")
    parser.add_argument("--sweep-interval", type=float, default=float(env("VISA_TRAINING_SWEEP_INTERVAL", "300")))
    args = parser.parse_args(argv)
    enable_pretty_logging()
    logging.getLogger().setLevel(logging.INFO)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
