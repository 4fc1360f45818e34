"""The console pages' base: admins only, the hub's look, the console's navigation, capacity, samples.

Every console page (`console.py`, `console_users.py`) subclasses `ConsolePage`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from datetime import UTC, datetime
from typing import Any

from tornado import web

from visa_collab.hubapi import HubError

from .base import BaseHandler
from .console_samples import keep_sampling, record_sample
from .console_views import summarise
from .ops import Operations

log = logging.getLogger("visa_ops.console")

NAV = [("", "Dashboard"), ("instances", "Instances"), ("sessions", "Live sessions"), ("plans", "Plans"),
       ("users", "Users"), ("notifications", "Notifications"), ("extensions", "Extension requests"),
       ("outbox", "Mail outbox")]
CAPACITY_TIMEOUT = 5.0


def when(value: datetime | None) -> str:
    """Times as the console shows them: UTC, to the minute."""
    if value is None:
        return "—"
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return f"{value:%Y-%m-%d %H:%M}"


def num(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


async def take_sample(ops: Operations) -> dict:
    """Count the hub's instances now and record them (skipped within MIN_GAP of the last)."""
    now = ops.now().replace(tzinfo=UTC)
    summary = summarise(await ops.listing(), now)
    await record_sample(ops.store.engine, now, summary["by_state"])
    return summary


class ConsolePage(BaseHandler):
    """An admin page: renders its template with the console's navigation, or a 403 page."""

    section = ""
    title = ""

    async def prepare(self) -> None:
        """Administrators only, on every method: the check runs before any handler code."""
        if self.current_user is None:
            if self.request.method in ("GET", "HEAD"):
                self.redirect(self.get_login_url())
                return
            raise web.HTTPError(403, "Sign in first (or the XSRF token is missing).")
        self.admin = await self.require_admin()
        self.start_sampling()

    def start_sampling(self) -> None:
        """Samples for the dashboard's plot every few minutes, from the first console visit on."""
        if self.settings.get("console_sampler") is None:
            self.settings["console_sampler"] = asyncio.ensure_future(
                keep_sampling(functools.partial(take_sample, self.ops)))

    @property
    def admin_prefix(self) -> str:
        return f"{self.prefix}admin/"

    @property
    def collab_prefix(self) -> str:
        return os.environ.get("VISA_OPS_COLLAB_PREFIX") or self.prefix.replace("/visa-ops/", "/visa-collab/")

    def now(self) -> datetime:
        """Aware UTC from the service's clock (naive UTC, injectable in tests)."""
        return self.ops.now().replace(tzinfo=UTC)

    def page(self, template: str, **ns: Any) -> None:
        self.render(template, title=self.title, nav=NAV, active=self.section, admin=self.admin_prefix,
                    collab_prefix=self.collab_prefix, when=when, num=num, **ns)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors as a console page (no navigation: the caller may not be an administrator)."""
        message = self._reason
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        self.render("admin_error.html", status=status_code, code=status_code, title=f"Error {status_code}",
                    nav=[], active="", admin=self.admin_prefix, message=message)

    async def capacity(self) -> tuple[dict | None, str]:
        """The hub's ``GET /hub/api/visa/capacity`` (spawner-ops), or (None, why) when it fails."""
        try:
            model = await asyncio.wait_for(self.ops.hub._call("GET", "/visa/capacity"), CAPACITY_TIMEOUT)
        except HubError as e:
            return None, f"the hub answered {e.status}"
        except TimeoutError:
            return None, "the hub did not answer in time"
        if not isinstance(model, dict) or not isinstance(model.get("backends"), dict):
            return None, "unexpected answer"
        return model, ""
