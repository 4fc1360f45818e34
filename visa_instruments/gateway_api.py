"""The gateway service's HTTP face: the write audit, for admins and the instrument's scientists.

`GET <prefix>api/audit?instrument=D11[&limit=500]` → `{"instrument": "D11", "writes": [...]}`,
newest first, each write as `audit.AuditLog.rows` gives it. Hub OAuth as visa-collab and visa-ops
(their `ApiHandler`: JSON errors, the caller from the hub); a scientist is a member of the hub
group `instrument:<id>`, as the gateway last read it from the hub's database.
"""
from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

from jupyterhub.services.auth import HubOAuthCallbackHandler
from tornado import web

from visa_collab.app import log_request
from visa_collab.handlers import ApiHandler
from visa_collab.roles import ADMIN_SCOPE

from .audit import AuditLog

MAX_ROWS = 5000


class AuditedGateway(Protocol):
    """What the API needs of `gateway.InstrumentGateway`."""

    upstreams: Mapping[str, str]
    audit_log: AuditLog

    def scientists(self, instrument: str) -> frozenset[str]: ...


class AuditHandler(ApiHandler):
    @property
    def gateway(self) -> AuditedGateway:
        return self.settings["gateway"]

    def may_read(self, instrument: str) -> bool:
        user = self.current_user or {}
        admin = bool(user.get("admin")) or ADMIN_SCOPE in (user.get("scopes") or ())
        return admin or self.actor in self.gateway.scientists(instrument)

    @web.authenticated
    async def get(self) -> None:
        instrument = self.get_argument("instrument", "")
        if instrument not in self.gateway.upstreams:
            known = ", ".join(sorted(self.gateway.upstreams))
            raise web.HTTPError(400, "Unknown instrument %r: the gateway serves %s.", instrument[:64], known)
        try:
            limit = int(self.get_argument("limit", "500"))
        except ValueError:
            raise web.HTTPError(400, "limit must be a whole number.") from None
        if not 1 <= limit <= MAX_ROWS:
            raise web.HTTPError(400, "limit must be between 1 and %d.", MAX_ROWS)
        if not self.may_read(instrument):
            raise web.HTTPError(403, "The write audit of %s is for administrators and its scientists.", instrument)
        loop = asyncio.get_running_loop()
        rows = await loop.run_in_executor(None, self.gateway.audit_log.rows, instrument, limit)
        self.send({"instrument": instrument, "writes": rows})


def make_app(gateway: AuditedGateway, prefix: str, hub_prefix: str, cookie_secret: bytes,
             callback_handler: type = HubOAuthCallbackHandler) -> web.Application:
    return web.Application(
        [(f"{prefix}oauth_callback", callback_handler), (f"{prefix}api/audit", AuditHandler)],
        gateway=gateway, service_prefix=prefix, hub_prefix=hub_prefix, cookie_secret=cookie_secret,
        log_function=log_request, xsrf_cookies=False,
    )
