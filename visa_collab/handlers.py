"""HTTP face of the collaboration service: JSON API, a few pages, and the instances' channel.

People authenticate through the hub's OAuth (cookie, with JupyterHub's XSRF rules) or a
token; instances authenticate with their server token (``JUPYTERHUB_API_TOKEN`` of the
single-user server), which the hub vouches for as "the owner, with access to this server".
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from jupyterhub.services.auth import HubOAuthenticated, check_scopes
from tornado import web

from .collab import CollabError, Collaboration
from .hubapi import HubError
from .roles import GRANTABLE, OWNER_AWAY_POLICIES, TRAINING_SERVICE, Role

log = logging.getLogger("visa_collab")
TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
_jinja = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))

NAME = r"([^/]+)"


def row_id(text: str, missing: str) -> int:
    """A record id from the URL (``\\d+``): past SQL's 64-bit integers no record has it."""
    value = int(text)
    if value >= 2**63:
        raise web.HTTPError(404, "%s", missing)
    return value


class BaseHandler(HubOAuthenticated, web.RequestHandler):
    api = False
    templates = _jinja  # a service built on these handlers (visa_ops) sets its own

    async def prepare(self) -> None:
        """Identify the caller without blocking the loop: HubAuthenticated's own (synchronous)
        look-up waits on a thread while the hub answers; this fills its per-request cache first."""
        await self.hub_auth.get_user(self, sync=False)

    @property
    def collab(self) -> Collaboration:
        return self.settings["collab"]

    @property
    def prefix(self) -> str:
        return self.settings["service_prefix"]

    @property
    def actor(self) -> str:
        user = self.current_user
        if user is None or user.get("kind") != "user":
            raise web.HTTPError(403, "People only.")
        return user["name"]

    def training_service(self) -> bool:
        """Is the caller the training service itself (its own hub token), not a person?"""
        user = self.current_user or {}
        return user.get("kind") == "service" and user.get("name") == TRAINING_SERVICE

    @property
    def xsrf(self) -> str:
        token = self.xsrf_token
        return token.decode("ascii") if isinstance(token, bytes) else token

    def set_default_headers(self) -> None:
        # our pages may be shown inside the desktop page (same origin), nowhere else
        self.set_header("Content-Security-Policy", "frame-ancestors 'self'")
        self.set_header("Cache-Control", "no-store")

    def body(self) -> dict:
        if not self.request.body:
            return {}
        try:
            data = json.loads(self.request.body)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            raise web.HTTPError(400, "The request body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise web.HTTPError(400, "The request body must be a JSON object.")
        return data

    def send(self, model: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(model))

    def render(self, template: str, status: int = 200, **ns: Any) -> None:  # type: ignore[override]
        user = self.current_user
        html = self.templates.get_template(template).render(
            prefix=self.prefix, hub_prefix=self.settings["hub_prefix"], user=user and user.get("name"),
            xsrf=self.xsrf if user else "", roles=GRANTABLE, Role=Role, policies=OWNER_AWAY_POLICIES,
            **ns,
        )
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(html)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        message = self._reason
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        if self.api or self.request.path.startswith(self.prefix + "api/"):
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"status": status_code, "message": message}))
        else:
            self.set_header("Content-Type", "text/html; charset=UTF-8")
            self.finish(self.templates.get_template("error.html").render(
                prefix=self.prefix, hub_prefix=self.settings["hub_prefix"], status=status_code,
                message=message, user=None, xsrf=""))  # base.html needs it (a TypeError, a blank page without)

    async def guard(self, coro):
        """Run a collaboration call, turning its refusals into HTTP errors."""
        try:
            return await coro
        except CollabError as e:
            raise web.HTTPError(e.status, "%s", e.message) from None
        except HubError as e:
            log.error("Hub API call failed: %s", e)
            raise web.HTTPError(502, "The hub did not answer as expected; nothing was changed.") from None


class ApiHandler(BaseHandler):
    api = True


# -- people -----------------------------------------------------------------------------------

class MeHandler(ApiHandler):
    @web.authenticated
    async def get(self) -> None:
        self.send({"name": self.actor, "xsrf": self.xsrf,
                   "admin": await self.collab.is_admin(self.actor)})


class MyInstancesHandler(ApiHandler):
    @web.authenticated
    async def get(self) -> None:
        self.send(await self.guard(self.collab.my_instances(self.actor)))


class TeamInstancesHandler(ApiHandler):
    @web.authenticated
    async def get(self) -> None:
        self.send(await self.guard(self.collab.team_instances(self.actor)))


class SupportInstancesHandler(ApiHandler):
    @web.authenticated
    async def get(self) -> None:
        self.send(await self.guard(self.collab.support_instances(self.actor)))


class SharedWithMeHandler(ApiHandler):
    @web.authenticated
    async def get(self) -> None:
        self.send(await self.guard(self.collab.shared_with_me(self.actor)))


class InstanceHandler(ApiHandler):
    @web.authenticated
    async def get(self, owner: str, server: str) -> None:
        self.send(await self.guard(self.collab.members(self.actor, owner, server)))


class MembersHandler(ApiHandler):
    @web.authenticated
    async def post(self, owner: str, server: str) -> None:
        body = self.body()
        if self.training_service():
            self.send(await self.guard(self.collab.course_grant(
                TRAINING_SERVICE, owner, server, body.get("member"), body.get("role"))), 201)
            return
        self.send(await self.guard(self.collab.add_member(self.actor, owner, server, body.get("member"),
                                                          body.get("role"))), 201)


class MemberHandler(ApiHandler):
    @web.authenticated
    async def patch(self, owner: str, server: str, member: str) -> None:
        body = self.body()
        if self.training_service():
            self.send(await self.guard(self.collab.course_grant(TRAINING_SERVICE, owner, server, member,
                                                                body.get("role"))))
            return
        self.send(await self.guard(self.collab.change_role(self.actor, owner, server, member, body.get("role"))))

    @web.authenticated
    async def delete(self, owner: str, server: str, member: str) -> None:
        self.send(await self.guard(self.collab.remove_member(self.actor, owner, server, member)))


class RestartHandler(ApiHandler):
    @web.authenticated
    async def post(self, owner: str, server: str) -> None:
        self.send(await self.guard(self.collab.restart(self.actor, owner, server)), 202)


class InvitationsHandler(ApiHandler):
    @web.authenticated
    async def post(self, owner: str, server: str) -> None:
        body = self.body()
        self.send(await self.guard(self.collab.invite(
            self.actor, owner, server, body.get("role"), body.get("expires_in", 86400), body.get("max_uses", 1))), 201)


class InvitationHandler(ApiHandler):
    @web.authenticated
    async def delete(self, owner: str, server: str, invitation: str) -> None:
        invitation_id = row_id(invitation, "No such invitation.")
        await self.guard(self.collab.revoke_invitation(self.actor, owner, server, invitation_id))
        self.set_status(204)
        self.finish()


class AcceptInvitationHandler(ApiHandler):
    @web.authenticated
    async def post(self) -> None:
        self.send(await self.guard(self.collab.accept_invitation(self.actor, self.body().get("code"))))


class PolicyHandler(ApiHandler):
    @web.authenticated
    async def put(self, owner: str, server: str) -> None:
        self.send(await self.guard(self.collab.set_policy(self.actor, owner, server, self.body().get("owner_away"))))


class AuditHandler(ApiHandler):
    @web.authenticated
    async def get(self, owner: str, server: str) -> None:
        self.send(await self.guard(self.collab.audit_log(self.actor, owner, server)))


class RequestAccessHandler(ApiHandler):
    @web.authenticated
    async def post(self, owner: str, server: str) -> None:
        self.send(await self.guard(self.collab.request_access(self.actor, owner, server)))


class RequestHandler_(ApiHandler):
    @web.authenticated
    async def get(self, rid: str) -> None:
        self.send(await self.guard(self.collab.request_status(self.actor, row_id(rid, "No such access request."))))


class DecisionHandler(ApiHandler):
    @web.authenticated
    async def post(self, rid: str) -> None:
        request_id = row_id(rid, "No such access request.")
        self.send(await self.guard(self.collab.decide(self.actor, request_id, self.body().get("decision"))))


class PendingRequestsHandler(ApiHandler):
    """Pending access requests on my instances (one instance with ?server=).

    Asked about one instance, this is also the owner's presence as the service sees it (as is
    an open event stream, `push.EventsHandler`, which the service's own pages use now). Only
    people signed in to this service get here (not the instance's server token: no access to it).
    """

    @web.authenticated
    async def get(self) -> None:
        self.send(await self.guard(self._pending()))

    async def _pending(self) -> list[dict]:
        server = self.get_argument("server", None)
        if server:
            self.collab.owner_polled(self.actor, server)
        names = [server] if server else await my_server_names(self.collab, self.actor)
        out = []
        for name in names:
            out += await self.collab.requests_for(self.actor, name, "pending")
        return out


async def my_server_names(collab: Collaboration, person: str) -> list[str]:
    """`person`'s servers, from a cached hub look-up: asked by pages that merely show requests."""
    model = await collab.hub.user(person, max_age=collab.hub.cache_ttl) or {}
    return [s["name"] for s in (model.get("servers") or {}).values() if s.get("name")]


# -- pages ------------------------------------------------------------------------------------

class IndexPage(BaseHandler):
    @web.authenticated
    async def get(self) -> None:
        actor = self.actor
        self.render(
            "index.html",
            mine=await self.guard(self.collab.my_instances(actor)),
            shared=await self.guard(self.collab.shared_with_me(actor)),
            team=await self.guard(self.collab.team_instances(actor)),
            support=await self.guard(self.collab.support_instances(actor)),
        )


class MembersPage(BaseHandler):
    @web.authenticated
    async def get(self, owner: str, server: str) -> None:
        model = await self.guard(self.collab.members(self.actor, owner, server))
        audit = await self.guard(self.collab.audit_log(self.actor, owner, server, limit=100))
        self.render("members.html", model=model, audit=audit, owner=owner, server=server,
                    instruments=await instance_instruments(self.collab, owner, server),
                    instrument_audit=os.environ.get("VISA_COLLAB_INSTRUMENT_AUDIT_URL")
                    or self.prefix.replace("/visa-collab/", "/visa-instruments/") + "audit")


async def instance_instruments(collab: Collaboration, owner: str, server: str) -> list[str]:
    """The instruments the server started with (VisaSpawner keeps them in `user_options`): its
    page links to each one's writes on the instrument gateway's audit (visa_instruments)."""
    model = await collab.hub.user(owner, max_age=collab.hub.cache_ttl) or {}
    options = ((model.get("servers") or {}).get(server) or {}).get("user_options") or {}
    return [i for i in options.get("instruments") or () if isinstance(i, str) and i]


class InvitePage(BaseHandler):
    @web.authenticated
    async def get(self) -> None:
        code = self.get_argument("code", "")
        try:
            info = await self.collab.describe_invitation(self.actor, code)
        except CollabError as e:
            self.render("error.html", status=e.status, message=e.message)
            return
        self.render("invite.html", info=info, code=code, status=410 if info["problem"] else 200)

    @web.authenticated
    async def post(self) -> None:
        try:
            result = await self.collab.accept_invitation(self.actor, self.get_body_argument("code", ""))
        except CollabError as e:
            self.render("error.html", status=e.status, message=e.message)
            return
        self.redirect(instance_entry(result["instance"]["url"], result["role"]))


class OpenPage(BaseHandler):
    """A support person opens someone's instance: in, or a request the owner answers."""

    @web.authenticated
    async def post(self, owner: str, server: str) -> None:
        try:
            result = await self.collab.request_access(self.actor, owner, server)
        except CollabError as e:
            self.render("error.html", status=e.status, message=e.message)
            return
        if result["status"] in ("owner", "member", "full"):
            self.redirect(instance_entry(result["instance"]["url"], result.get("role", "owner")))
        else:
            self.redirect(f"{self.prefix}requests/{result['id']}")


class RequestPage(BaseHandler):
    @web.authenticated
    async def get(self, rid: str) -> None:
        req = await self.guard(self.collab.request_status(self.actor, row_id(rid, "No such access request.")))
        inst = await self.guard(self.collab.instance(req["owner"], req["server"]))
        self.render("request.html", req=req, instance=inst.model(),
                    full_url=instance_entry(inst.url, "support"), guest_url=instance_entry(inst.url, "guest"))


class PromptPage(BaseHandler):
    """Pending requests for the owner, small enough to sit over the desktop page."""

    @web.authenticated
    async def get(self) -> None:
        self.render("prompt.html", server=self.get_argument("server", ""))


def instance_entry(url: str, role: str) -> str:
    """Where a member lands: the desktop for guests (no Lab for them), Lab otherwise."""
    return url + ("visa/desktop" if role == Role.GUEST.value else "lab")


# -- the instances' channel --------------------------------------------------------------------

class InstanceChannelHandler(ApiHandler):
    """Called by the instance's own Jupyter server with its server token."""

    @property
    def hub_scopes(self):  # accept tokens without access to this service: checked below
        return None

    def instance_identity(self, owner: str, server: str) -> None:
        user = self.current_user
        if (
            user is None or user.get("kind") != "user" or user.get("name") != owner
            or not check_scopes({f"access:servers!server={owner}/{server}"}, set(user.get("scopes", [])))
        ):
            raise web.HTTPError(403, "Only the instance itself may report on it.")


class PresenceHandler(InstanceChannelHandler):
    @web.authenticated
    async def post(self, owner: str, server: str) -> None:
        self.instance_identity(owner, server)
        body = self.body()
        self.send(await self.collab.report(owner, server, body.get("sessions"), body.get("events")))


class RoomHandler(InstanceChannelHandler):
    @web.authenticated
    async def get(self, owner: str, server: str) -> None:
        self.instance_identity(owner, server)
        wait = min(max(float(self.get_argument("wait", "0") or 0), 0.0), 55.0)
        state = await self.collab.wait_room(owner, server, self.get_argument("version", None), wait)
        self.send({**state, "pending_requests": len(await self.collab.requests_for(owner, server, "pending"))})


def make_handlers(prefix: str, callback_handler: type) -> list[tuple]:
    p = prefix
    inst = f"{NAME}/{NAME}"
    return [
        (f"{p}oauth_callback", callback_handler),
        (f"{p}?", IndexPage),
        (f"{p}instances/{inst}/?", MembersPage),
        (f"{p}invite", InvitePage),
        (f"{p}open/{inst}", OpenPage),
        (f"{p}requests/(\\d+)", RequestPage),
        (f"{p}prompt", PromptPage),
        (f"{p}api/me", MeHandler),
        (f"{p}api/instances", MyInstancesHandler),
        (f"{p}api/team-instances", TeamInstancesHandler),
        (f"{p}api/support-instances", SupportInstancesHandler),
        (f"{p}api/shared-with-me", SharedWithMeHandler),
        (f"{p}api/pending-requests", PendingRequestsHandler),
        (f"{p}api/invitations/accept", AcceptInvitationHandler),
        (f"{p}api/instances/{inst}", InstanceHandler),
        (f"{p}api/instances/{inst}/members", MembersHandler),
        (f"{p}api/instances/{inst}/members/{NAME}", MemberHandler),
        (f"{p}api/instances/{inst}/invitations", InvitationsHandler),
        (f"{p}api/instances/{inst}/invitations/(\\d+)", InvitationHandler),
        (f"{p}api/instances/{inst}/policy", PolicyHandler),
        (f"{p}api/instances/{inst}/restart", RestartHandler),
        (f"{p}api/instances/{inst}/audit", AuditHandler),
        (f"{p}api/instances/{inst}/requests", RequestAccessHandler),
        (f"{p}api/instances/{inst}/presence", PresenceHandler),
        (f"{p}api/instances/{inst}/room", RoomHandler),
        (f"{p}api/requests/(\\d+)", RequestHandler_),
        (f"{p}api/requests/(\\d+)/decision", DecisionHandler),
    ]

