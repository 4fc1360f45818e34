"""Hub page handler for the "New instance" form on the home page.

A named server in JupyterHub is created with a server name in the URL; our users type a free
name instead. This handler validates the whole request first (the same `validate_request` the
spawner uses), so a bad request comes back as the form with a clear message and nothing is
created; then it creates the named server with its display name and starts it.
"""
from __future__ import annotations

from datetime import UTC, datetime

from jupyterhub.handlers import BaseHandler
from jupyterhub.utils import url_path_join
from tornado import web

from .archives import handlers as archive_handlers
from .capacity import CapacityHandler
from .course import quota_beside_courses
from .options import OptionError, validate_request
from .pool_handlers import handlers as pool_handlers
from .reset import handlers as reset_handlers
from .spawning import spawn_then_progress


class NewInstanceHandler(BaseHandler):
    """POST /hub/visa/new: create and start an instance; GET goes back to the home page."""

    @web.authenticated
    def get(self) -> None:
        self.redirect(url_path_join(self.hub.base_url, "home"))

    @web.authenticated
    async def post(self) -> None:
        user = self.current_user
        spawner = user.spawner  # the default spawner carries the configuration (plans, screens…)
        form = {k: [v.decode("utf8", "replace") for v in vs] for k, vs in self.request.body_arguments.items()}
        existing = {s.name: (s.display_name or s.name) for s in user.orm_user._orm_spawners if s.name}
        entitlements = await spawner.entitlements()
        entitlements["quota"] = quota_beside_courses(entitlements["quota"], _named_servers(user))
        try:
            request = validate_request(
                form, entitlements=entitlements, plans=spawner.plan_catalogue(),
                existing=existing, screens=spawner.screens, keyboards=spawner.keyboards,
                roles_without_proposal=spawner.roles_without_proposal,
                disabled=spawner.disabled_plans(), gpus_free=await spawner.gpus_free(),
                archives={a.id: a for a in await spawner.archives()},
            )
        except OptionError as e:
            self.log.info("New instance refused for %s: %s", user.name, e)
            self.set_status(400)
            self.set_header("Content-Type", "text/html; charset=UTF-8")
            await self._render_home(error_message=str(e), form=form)
            return
        options = request.user_options()
        options["created"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        await spawn_then_progress(self, user, request.server_name, request.display_name, options)

    async def _render_home(self, **extra) -> None:
        user = self.current_user
        html = await self.render_template(
            "home.html", auth_state=await user.get_auth_state(), user=user,
            url=url_path_join(self.hub.base_url, "home"), allow_named_servers=self.allow_named_servers,
            named_server_limit_per_user=await self.get_current_user_named_server_limit(),
            url_path_join=url_path_join, spawners=user.orm_user._orm_spawners,
            default_server=user.spawner, invalid_server_names=[], **extra,
        )
        self.finish(html)


async def named_server_limit(handler) -> int:
    """`JupyterHub.named_server_limit_per_user`: the facility quota, for REST API requests too.

    JupyterHub reads 0 as "no limit" and calls this hook before it creates a named server
    record (`_check_named_server_request`), so this is where records are refused that a limit
    cannot express:

    * quota 0 (an account awaiting approval): no record at all, through any route;
    * any record from a GET (``/hub/spawn/<user>/<name>``): a link on another site must not
      create instances. Existing instances are still shown their spawn page (whose start
      button POSTs with the XSRF token).

    Quota -1 (unlimited) maps to JupyterHub's 0. An admin's override beats the catalogue's quota
    (`VisaSpawner.quota_for`). Course instances do not use the quota (`course.quota_beside_courses`).
    """
    user = handler.current_user
    if not hasattr(user, "get_auth_state"):
        return 0
    quota = user.spawner.quota_for(((await user.get_auth_state()) or {}).get("visa") or {})
    if _creates_a_record(handler):
        if handler.request.method == "GET":
            raise web.HTTPError(405, "Instances are created from the home page, not by following a link.")
        if quota == 0:
            raise web.HTTPError(403, "Your account is awaiting approval: you cannot create instances yet.")
    return 0 if quota in (-1, 0) else quota_beside_courses(int(quota), _named_servers(user))


def _named_servers(user) -> list[tuple[str, dict]]:
    """(name, user_options) of the user's named servers."""
    return [(name, s.user_options or {}) for name, s in user.orm_spawners.items() if name]


def _creates_a_record(handler) -> bool:
    """Is `handler` about to create a named server that does not exist yet?"""
    from jupyterhub.apihandlers.users import UserServerAPIHandler
    from jupyterhub.handlers.pages import SpawnHandler

    if not isinstance(handler, (SpawnHandler, UserServerAPIHandler)):
        return False  # pages that only show the limit (home)
    args = list(handler.path_args or [])
    user_name = args[0] if args else handler.current_user.name
    server_name = args[1] if len(args) > 1 else ""
    if not server_name:
        return False  # the default server always exists
    owner = handler.find_user(user_name)
    return owner is None or server_name not in owner.orm_spawners


handlers = [(r"/visa/new", NewInstanceHandler), (r"/api/visa/capacity", CapacityHandler), *archive_handlers,
            *reset_handlers, *pool_handlers]
