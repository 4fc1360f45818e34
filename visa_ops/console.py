"""The admin console: HTML pages at ``/services/visa-ops/admin/…`` in the hub's look.

Every route is for administrators only (403 for everyone else, page or JSON). Pages read the
hub's database (`Operations.instances`), the service's store and the hub's capacity call; every
*action* is a POST from the page's script to the service's admin API (`visa_ops.handlers`,
audited there) with JupyterHub's XSRF token, except the plan switch, a form posted here.
"""

from __future__ import annotations

import asyncio
import logging
import mailbox
import os
from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header
from email.message import Message

from tornado import web

from visa_spawner.plan_switch import read_disabled, write_disabled

from .console_base import ConsolePage, take_sample, when
from .console_samples import series
from .console_users import UsersPage
from .console_views import STATES, BadQuery, InstanceQuery, hourly, plan_rows, plot_svg, select_instances
from .ops import LEVELS

log = logging.getLogger("visa_ops.console")
PLOT_DAYS = 7
SESSIONS_LIMIT = 200
OUTBOX_LIMIT = 100
EXTENSION_STATUSES = ("pending", "accepted", "refused", "auto-accepted")


class DashboardPage(ConsolePage):
    title = "Dashboard"

    async def get(self) -> None:
        summary = await take_sample(self.ops)
        now = self.now()  # after the sample: a sample later than `now` is not plotted
        points = hourly(await series(self.ops.store.engine, now - timedelta(days=PLOT_DAYS)), now, PLOT_DAYS)
        capacity, capacity_error = await self.capacity()
        self.page("admin_dashboard.html", summary=summary, capacity=capacity, capacity_error=capacity_error,
                  plot=plot_svg(points, now, PLOT_DAYS), samples=len(points), days=PLOT_DAYS)


class InstancesPage(ConsolePage):
    section, title = "instances", "Instances"

    async def get(self) -> None:
        args = {k: self.get_argument(k, "") for k in self.request.arguments}
        try:
            query = InstanceQuery.parse(args)
        except BadQuery as e:
            raise web.HTTPError(400, "%s", str(e)) from None
        instances = await self.ops.listing()
        page = select_instances(instances, query, self.now())
        plans = sorted({i.plan for i in instances if i.plan} | set(self.ops.plan_backends))
        self.page("admin_instances.html", query=query, page=page, plans=plans, states=STATES)


class SessionsPage(ConsolePage):
    section, title = "sessions", "Live sessions"

    async def get(self) -> None:
        running = sorted((i for i in await self.ops.listing() if i.state == "running"), key=lambda i: i.key)
        self.page("admin_sessions.html", running=running[:SESSIONS_LIMIT], truncated=len(running) > SESSIONS_LIMIT)


def configured_plans(settings: dict, plan_backends: dict[str, str]) -> list[dict]:
    """The plan catalogue when the hub's capacity answer is missing: the app's ``plans`` setting,
    else the plan ids and backends the service is configured with (``VISA_OPS_PLAN_BACKENDS``)."""
    if settings.get("plans") is not None:
        return list(settings["plans"])
    return [{"id": pid, "display_name": pid, "backend": backend} for pid, backend in sorted(plan_backends.items())]


class PlansPage(ConsolePage):
    section, title = "plans", "Plans"

    @property
    def switch_file(self) -> str:
        return self.settings.get("plan_switch_file") or os.environ.get("VISA_OPS_PLAN_SWITCH_FILE", "")

    async def get(self) -> None:
        loop = asyncio.get_running_loop()
        disabled = await loop.run_in_executor(None, read_disabled, self.switch_file) if self.switch_file else set()
        capacity, capacity_error = await self.capacity()
        plans = plan_rows(configured_plans(self.settings, self.ops.plan_backends), disabled, capacity)
        self.page("admin_plans.html", plans=plans, capacity=capacity, capacity_error=capacity_error,
                  switch_file=self.switch_file)

    async def post(self) -> None:
        """Enable or disable one plan (``plan``, ``enabled`` yes/no): the hub reads the file at its next spawn."""
        if not self.switch_file:
            raise web.HTTPError(409, "VISA_OPS_PLAN_SWITCH_FILE is not set: plans cannot be switched here.")
        plan, enabled = self.get_body_argument("plan", ""), self.get_body_argument("enabled", "")
        known = {str(p["id"]) for p in configured_plans(self.settings, self.ops.plan_backends)}
        capacity, _ = await self.capacity()
        known |= {str(p.get("id")) for p in (capacity or {}).get("plans") or () if isinstance(p, dict)}
        if plan not in known:
            raise web.HTTPError(400, "No such plan.")
        if enabled not in ("yes", "no"):
            raise web.HTTPError(400, 'enabled must be "yes" or "no".')
        loop = asyncio.get_running_loop()
        disabled = await loop.run_in_executor(None, read_disabled, self.switch_file)
        disabled = disabled - {plan} if enabled == "yes" else disabled | {plan}
        await loop.run_in_executor(None, write_disabled, self.switch_file, disabled)
        await self.ops.store.add_audit(self.admin, "plan", reason="enable" if enabled == "yes" else "disable",
                                       detail={"plan": plan})
        log.info("%s %s plan %s", self.admin, "enabled" if enabled == "yes" else "disabled", plan)
        self.redirect(f"{self.admin_prefix}plans", status=303)


class NotificationsPage(ConsolePage):
    section, title = "notifications", "Notifications"

    async def get(self) -> None:
        self.page("admin_notifications.html", notifications=await self.ops.store.list_notifications(), levels=LEVELS)


class ExtensionsPage(ConsolePage):
    section, title = "extensions", "Extension requests"

    async def get(self) -> None:
        status = self.get_argument("status", "pending")
        if status and status not in EXTENSION_STATUSES:
            raise web.HTTPError(400, "status must be one of %s (or empty for all).", ", ".join(EXTENSION_STATUSES))
        self.page("admin_extensions.html", shown=status,
                  extensions=await self.ops.store.list_extensions(status or None))


def _header(msg: Message, name: str) -> str:
    try:
        return str(make_header(decode_header(msg.get(name, ""))))
    except (ValueError, LookupError):
        return str(msg.get(name, ""))


def _text_body(msg: Message) -> str:
    part = next((p for p in msg.walk() if p.get_content_type() == "text/plain"), None) if msg.is_multipart() else msg
    if part is None:
        return "(no text part)"
    payload = part.get_payload(decode=True) or b""
    return payload.decode(part.get_content_charset() or "utf-8", "replace")


def read_outbox(path: str, limit: int = OUTBOX_LIMIT) -> list[dict]:
    """The newest `limit` messages of a Maildir (new/ and cur/), newest first: only those are
    parsed, by delivery time (the files' mtime, which `mailbox.Maildir` sets). Blocking: run in an executor."""
    if not os.path.isdir(path):
        return []
    box = mailbox.Maildir(path, factory=None, create=False)
    files = []
    for sub in ("new", "cur"):
        try:
            entries = list(os.scandir(os.path.join(path, sub)))
        except FileNotFoundError:
            continue
        for entry in entries:
            try:
                if not entry.name.startswith("."):
                    files.append((entry.stat().st_mtime, entry.name.split(box.colon)[0]))
            except FileNotFoundError:  # moved from new/ to cur/ while we looked
                continue
    files.sort(reverse=True)
    out = []
    for at, key in files[:limit]:
        try:
            msg = box.get_message(key)
        except (OSError, KeyError):
            continue
        out.append({"key": key, "date": when(datetime.fromtimestamp(at, UTC)), "subject": _header(msg, "Subject"),
                    "to": _header(msg, "To"), "body": _text_body(msg)})
    return out


class OutboxPage(ConsolePage):
    section, title = "outbox", "Mail outbox (demo)"

    async def get(self) -> None:
        maildir = self.settings.get("outbox_maildir") or os.environ.get("VISA_OPS_OUTBOX_MAILDIR", "")
        messages = await asyncio.get_running_loop().run_in_executor(None, read_outbox, maildir) if maildir else []
        self.page("admin_outbox.html", maildir=maildir, messages=messages)


def console_handlers(prefix: str) -> list[tuple]:
    """The console's routes under the service prefix (``…/visa-ops/``), for `make_handlers`."""
    admin = f"{prefix}admin/"
    return [
        (f"{admin}?", DashboardPage),
        (f"{admin}instances/?", InstancesPage),
        (f"{admin}sessions/?", SessionsPage),
        (f"{admin}plans/?", PlansPage),
        (f"{admin}users/?", UsersPage),
        (f"{admin}notifications/?", NotificationsPage),
        (f"{admin}extensions/?", ExtensionsPage),
        (f"{admin}outbox/?", OutboxPage),
    ]
