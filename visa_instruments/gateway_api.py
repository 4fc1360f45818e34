"""The gateway service's HTTP face: the write audit, as JSON and as a page.

`GET <prefix>api/audit?instrument=D11[&owner=alice&server=lab][&limit=500]` →
`{"instrument": "D11", "owner": ..., "server": ..., "writes": [...]}`, newest first, each write as
`audit.AuditLog.rows` gives it; `GET <prefix>audit?...` is the same as a page (the hub's look, as
visa-collab's pages), and `GET <prefix>audit` alone lists the instruments with links.

Who reads what: hub admins, holders of `custom:visa-admin` and the instrument's scientists (hub
group `instrument:<id>`, as the gateway last read it from the hub's database) read every write of
the instrument, filters optional. Anyone else reads only the writes of their own instances: with
`owner=<themselves>` (the link on their instance's collab audit page); they may not read other
people's. The owner answers for what their instance did, and the collab audit they already read
is theirs alone, so this shows them nothing they could not know. Hub OAuth as visa-collab and
visa-ops (their handlers: JSON errors under `api/`, an error page elsewhere).
"""
from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Protocol

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape
from jupyterhub.services.auth import HubOAuthCallbackHandler
from tornado import web

from visa_collab.app import log_request
from visa_collab.handlers import TEMPLATES as COLLAB_TEMPLATES
from visa_collab.handlers import ApiHandler, BaseHandler
from visa_collab.roles import ADMIN_SCOPE

from .audit import AuditLog

MAX_ROWS = 5000
MAX_NAME = 255  # the audit table's owner and server columns
TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
# our pages, on visa-collab's base and error pages (one look for the services' pages)
_jinja = Environment(loader=ChoiceLoader([FileSystemLoader(TEMPLATES), FileSystemLoader(COLLAB_TEMPLATES)]),
                     autoescape=select_autoescape(["html"]))


class AuditedGateway(Protocol):
    """What the API needs of `gateway.InstrumentGateway`."""

    upstreams: Mapping[str, str]
    audit_log: AuditLog

    def scientists(self, instrument: str) -> frozenset[str]: ...


@dataclass(frozen=True)
class AuditQuery:
    """One request for the audit, checked: which instrument, narrowed to whose instances."""

    instrument: str
    owner: str = ""
    server: str = ""
    limit: int = 500


class AuditReader(BaseHandler):
    """The checks shared by the API and the page: the arguments, then the caller's right."""

    templates = _jinja

    @property
    def gateway(self) -> AuditedGateway:
        return self.settings["gateway"]

    def is_privileged(self, instrument: str) -> bool:
        """An admin or the instrument's scientist: every write of the instrument."""
        user = self.current_user or {}
        admin = bool(user.get("admin")) or ADMIN_SCOPE in (user.get("scopes") or ())
        return admin or self.actor in self.gateway.scientists(instrument)

    def audit_query(self) -> AuditQuery:
        """The request's arguments (400 when bad), then the caller's right to them (403)."""
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
        owner, server = self.get_argument("owner", ""), self.get_argument("server", "")
        if len(owner) > MAX_NAME or len(server) > MAX_NAME:
            raise web.HTTPError(400, "owner and server are at most %d characters.", MAX_NAME)
        if not self.is_privileged(instrument) and (not owner or owner != self.actor):
            raise web.HTTPError(
                403, "The write audit of %s is for administrators and its scientists; the owner of an "
                "instance reads its writes with owner=<their name>.", instrument)
        return AuditQuery(instrument, owner, server, limit)

    async def writes(self, query: AuditQuery) -> list[dict]:
        """The rows, read off the loop (the audit database is SQLAlchemy, blocking)."""
        read = functools.partial(self.gateway.audit_log.rows, query.instrument, query.limit,
                                 owner=query.owner or None, server=query.server or None)
        return await asyncio.get_running_loop().run_in_executor(None, read)


class AuditHandler(AuditReader, ApiHandler):
    @web.authenticated
    async def get(self) -> None:
        query = self.audit_query()
        model = asdict(query)
        del model["limit"]
        self.send({**model, "writes": await self.writes(query)})


class AuditPage(AuditReader):
    """The writes as a table; without `instrument`, the instruments the caller may look at."""

    @web.authenticated
    async def get(self) -> None:
        if not self.get_argument("instrument", ""):
            choices = [(i, self.is_privileged(i)) for i in sorted(self.gateway.upstreams)]
            self.render("instrument_audit_index.html", choices=choices, me=self.actor)
            return
        query = self.audit_query()
        self.render("instrument_audit.html", query=query, writes=await self.writes(query))


def make_app(gateway: AuditedGateway, prefix: str, hub_prefix: str, cookie_secret: bytes,
             callback_handler: type = HubOAuthCallbackHandler) -> web.Application:
    return web.Application(
        [(f"{prefix}oauth_callback", callback_handler), (f"{prefix}api/audit", AuditHandler),
         (f"{prefix}audit", AuditPage)],
        gateway=gateway, service_prefix=prefix, hub_prefix=hub_prefix, cookie_secret=cookie_secret,
        log_function=log_request, xsrf_cookies=False,
    )
