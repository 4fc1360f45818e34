"""The base request handler of visa-ops: hub OAuth, JSON in and out, errors, the admin check.

Builds on `visa_collab.handlers.BaseHandler` (hub OAuth, JSON body parsing, ``send``, the
frame-ancestors header) and renders visa-ops' own templates. The console pages
(`visa_ops.console`) subclass `BaseHandler` / `ApiHandler` and call `require_admin`.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from tornado import web

from visa_collab.handlers import BaseHandler as CollabBaseHandler
from visa_collab.handlers import row_id
from visa_collab.roles import ADMIN_SCOPE

if TYPE_CHECKING:
    from .ops import Operations

log = logging.getLogger("visa_ops")
TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
jinja = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))

__all__ = ["ApiHandler", "BaseHandler", "jinja", "row_id"]


class BaseHandler(CollabBaseHandler):
    """Settings it reads: ``ops`` (`visa_ops.ops.Operations`), ``service_prefix``, ``hub_prefix``."""

    templates = jinja  # visa-ops' own pages and error page

    @property
    def ops(self) -> Operations:
        return self.settings["ops"]

    async def is_admin(self) -> bool:
        """Hub admin, or holder of ``custom:visa-admin`` (group ``role:admin``): in the OAuth
        token's scopes, else asked of the hub (cached briefly: one look-up per person per 30 s)."""
        user = self.current_user
        if not user or user.get("kind") != "user":
            return False
        if user.get("admin") or ADMIN_SCOPE in (user.get("scopes") or ()):
            return True
        return await self.ops.is_admin(user["name"])

    async def require_admin(self) -> str:
        """The caller's name, or 403 for anyone but administrators."""
        name = self.actor
        if not await self.is_admin():
            raise web.HTTPError(403, "Administrators only.")
        return name

    def render(self, template: str, status: int = 200, **ns: Any) -> None:  # type: ignore[override]
        user = self.current_user
        html = self.templates.get_template(template).render(
            prefix=self.prefix, hub_prefix=self.settings["hub_prefix"], user=user and user.get("name"),
            xsrf=self.xsrf if user else "", **ns,
        )
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(html)


class ApiHandler(BaseHandler):
    api = True
