"""HTTP face of visa-ops: the JSON API (owners and admins), the embeddable banner, metrics.

All under ``/services/visa-ops/``; the contract is in docs/operations.md. Admin routes answer
403 to everyone else; bad input is a 400 with a plain JSON message, never a 500.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from tornado import web

from .base import ApiHandler, BaseHandler, row_id
from .ops import ADMIN_ACTIONS, LEVELS, extension_model, notification_model

NAME = r"([^/]+)"
INST = f"{NAME}/{NAME}"
MAX_PAGE = 500


class OpsApiHandler(ApiHandler):
    async def call(self, coro: Any) -> Any:
        """`guard` (refusals → 4xx, hub failures → 502), named for this service."""
        return await self.guard(coro)


class IndexPage(BaseHandler):
    """The service's root (the hub's services menu links here): the console for admins, else home."""

    @web.authenticated
    async def get(self) -> None:
        self.redirect(f"{self.prefix}admin/" if await self.is_admin() else f"{self.settings['hub_prefix']}home")


class MeHandler(OpsApiHandler):
    @web.authenticated
    async def get(self) -> None:
        self.send(await self.call(self.ops.me(self.actor)))


class InstanceHandler(OpsApiHandler):
    @web.authenticated
    async def get(self, owner: str, server: str) -> None:
        admin = self.actor != owner and await self.is_admin()
        self.send(await self.call(self.ops.instance_model(self.actor, owner, server, admin)))


class ExtensionsHandler(OpsApiHandler):
    @web.authenticated
    async def post(self, owner: str, server: str) -> None:
        body = self.body()
        ext = await self.call(self.ops.request_extension(self.actor, owner, server, body.get("days"),
                                                         body.get("comment")))
        self.send(ext, 201)


# -- admin ---------------------------------------------------------------------------------------

def _filter(items: list[dict], args: dict[str, str]) -> list[dict]:
    """Exact filters on owner, proposal, plan, backend, state, instrument; `q` searches names."""
    for key in ("owner", "proposal", "plan", "backend", "state"):
        if args.get(key):
            items = [i for i in items if i[key] == args[key]]
    if args.get("instrument"):
        items = [i for i in items if args["instrument"] in i["instruments"]]
    if args.get("q"):
        q = args["q"].lower()
        items = [i for i in items if q in f"{i['owner']} {i['server']} {i['display_name']} {i['proposal']}".lower()]
    return items


class AdminInstancesHandler(OpsApiHandler):
    @web.authenticated
    async def get(self) -> None:
        await self.require_admin()
        args = {k: self.get_argument(k, "") for k in
                ("owner", "proposal", "plan", "backend", "state", "instrument", "q", "offset", "limit")}
        try:
            offset, limit = int(args["offset"] or 0), int(args["limit"] or 100)
        except ValueError:
            raise web.HTTPError(400, "offset and limit must be whole numbers.") from None
        if offset < 0 or not 1 <= limit <= MAX_PAGE:
            raise web.HTTPError(400, f"offset must be >= 0 and limit from 1 to {MAX_PAGE}.")
        owner = args["owner"] or None
        items = _filter(await self.call(self.ops.models(await self.call(self.ops.instances(owner)))), args)
        self.send({"total": len(items), "offset": offset, "items": items[offset:offset + limit]})


class AdminActionHandler(OpsApiHandler):
    @web.authenticated
    async def post(self, owner: str, server: str, action: str) -> None:
        actor = await self.require_admin()
        if action not in ADMIN_ACTIONS:
            raise web.HTTPError(404, "No such action: use stop, delete, extend or unlimited.")
        self.send(await self.call(self.ops.admin_action(actor, owner, server, action, self.body())))


class AdminExtensionsHandler(OpsApiHandler):
    @web.authenticated
    async def get(self) -> None:
        await self.require_admin()
        status = self.get_argument("status", "") or None
        if status not in (None, "pending", "accepted", "refused", "auto-accepted"):
            raise web.HTTPError(400, "status must be pending, accepted, refused or auto-accepted.")
        rows = await self.ops.store.list_extensions(status)
        self.send({"items": [extension_model(r) for r in rows]})


class AdminExtensionHandler(OpsApiHandler):
    @web.authenticated
    async def post(self, rid: str) -> None:
        actor = await self.require_admin()
        body = self.body()
        ext = await self.call(self.ops.decide_extension(
            actor, row_id(rid, "No such extension request."), body.get("decision"), body.get("comment", "")))
        self.send(ext)


class AdminNotificationsHandler(OpsApiHandler):
    @web.authenticated
    async def get(self) -> None:
        await self.require_admin()
        self.send({"items": [notification_model(n) for n in await self.ops.store.list_notifications()],
                   "levels": list(LEVELS)})

    @web.authenticated
    async def post(self) -> None:
        actor = await self.require_admin()
        self.send(await self.call(self.ops.add_notification(actor, self.body())), 201)


class AdminNotificationHandler(OpsApiHandler):
    @web.authenticated
    async def delete(self, nid: str) -> None:
        actor = await self.require_admin()
        number = row_id(nid, "No such notification.")
        if not await self.ops.store.delete_notification(number):
            raise web.HTTPError(404, "No such notification.")
        await self.ops.store.add_audit(actor, "unnotify", detail={"id": number})
        self.set_status(204)
        self.finish()


class AdminAuditHandler(OpsApiHandler):
    @web.authenticated
    async def get(self) -> None:
        await self.require_admin()
        rows = await self.ops.store.audit_rows(self.get_argument("owner", None), self.get_argument("server", None),
                                               self.get_argument("action", None))
        for r in rows:
            r["at"] = r["at"].isoformat(timespec="seconds") + "Z"
        self.send({"items": rows})


class MetricsHandler(BaseHandler):
    """Prometheus text; for administrators and services (a scraper's token)."""

    @web.authenticated
    async def get(self) -> None:
        user = self.current_user or {}
        if user.get("kind") != "service" and not await self.is_admin():
            raise web.HTTPError(403, "Administrators only.")
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(self.ops.metrics.registry))


class BannerPage(BaseHandler):
    """Small page for an iframe on the hub home and desktop pages: active notifications and, for
    the owner (or an admin), each instance's warning with an "Ask for more time" form.
    ``?owner=&server=``: that instance (the desktop page); ``?owner=`` only: every instance of the
    owner that has something to say (the home page)."""

    @web.authenticated
    async def get(self) -> None:
        owner, server = self.get_argument("owner", ""), self.get_argument("server", "")
        notifications = await self.ops.active_notifications()
        instances: list[dict] = []
        if owner and (owner == self.actor or await self.is_admin()):
            found = await self.guard(self.ops.instances(owner, server or None))
            instances = [m for m in await self.guard(self.ops.models(found))
                         if server or m["warning"] or (m["extension"] and m["extension"]["status"] == "pending")]
        self.render("banner.html", notifications=notifications, instances=instances,
                    asker=self.actor, max_days=self.ops.policy.max_extension_days)


def console_routes(prefix: str) -> list[tuple]:
    """The admin console's pages (helper "console"), when that module is present."""
    try:
        from .console import console_handlers
    except ImportError:
        return []
    return console_handlers(prefix)


def make_handlers(prefix: str, callback_handler: type) -> list[tuple]:
    p = prefix
    return [
        (f"{p}oauth_callback", callback_handler),
        (f"{p}?", IndexPage),
        (f"{p}api/me", MeHandler),
        (f"{p}api/instances/{INST}", InstanceHandler),
        (f"{p}api/instances/{INST}/extensions", ExtensionsHandler),
        (f"{p}api/admin/instances", AdminInstancesHandler),
        (f"{p}api/admin/instances/{INST}/{NAME}", AdminActionHandler),
        (f"{p}api/admin/extensions", AdminExtensionsHandler),
        (f"{p}api/admin/extensions/(\\d+)", AdminExtensionHandler),
        (f"{p}api/admin/notifications", AdminNotificationsHandler),
        (f"{p}api/admin/notifications/(\\d+)", AdminNotificationHandler),
        (f"{p}api/admin/audit", AdminAuditHandler),
        (f"{p}metrics", MetricsHandler),
        (f"{p}banner", BannerPage),
        *console_routes(p),
    ]
