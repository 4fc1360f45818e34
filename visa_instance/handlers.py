"""Authenticated handlers for the desktop page and the files it loads.

Every route goes through jupyter-server's login check *and* its Authorizer (resource
``visa-desktop``): `visa_instance.authorizer.VisaAuthorizer` lets view-only members read the
page (not ``write``, which the page shows as "view only"). The room API tells the page, while it
is open, when that changes and — for the owner — when someone asks to join.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Awaitable
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from jupyter_server.auth.decorator import allow_unauthenticated, authorized
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import ensure_async, url_path_join
from tornado import web

from .authorizer import hub_model
from .desktop_env import DEFAULT_NAME, clean_name

AUTH_RESOURCE = "visa-desktop"
TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
_jinja = Environment(
    loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"])
)


class DesktopPageHandler(JupyterHandler):
    """The full-window noVNC page at ``{base_url}visa/desktop``."""

    auth_resource = AUTH_RESOURCE
    template = "desktop.html"
    fits_window = True  # the remote screen may follow the window's size ("Fit window" in the bar)

    def initialize(self, websocket_path: str, page_vars: dict[str, Any] | None = None) -> None:
        self.websocket_path = websocket_path
        self.page_vars = page_vars or {}  # what a page built on this one adds (instrument panels)

    def may_input(self) -> bool:
        """A per-person rule beside the room's level (an instrument panel's); the desktop: none."""
        return True

    @web.authenticated
    @authorized
    async def get(self) -> None:
        # Only a hint for the page (hides input); the websocket layer must enforce it.
        can_write = await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, "write", AUTH_RESOURCE)
        ) and self.may_input()
        name = clean_name(os.environ.get("VISA_INSTANCE_NAME")) or DEFAULT_NAME
        config = {
            "baseUrl": self.base_url,
            "websocketPath": self.websocket_path,
            "instanceName": name,
            "viewOnly": not can_write,
            "roomPath": "visa/api/room",
            "screen": os.environ.get("VISA_SCREEN", ""),  # the size chosen for the instance ("Fixed size")
            "fitsWindow": self.fits_window,
            "xsrf": self.xsrf_token.decode("ascii") if isinstance(self.xsrf_token, bytes) else self.xsrf_token,
        }
        collab = self.settings.get("visa_collab_prefix")
        if collab:
            server = os.environ.get("JUPYTERHUB_SERVER_NAME", "")
            config["collabPrompt"] = url_path_join(collab, "prompt") + "?server=" + quote(server, safe="")
        if self.settings.get("visa_ops_banner"):
            config["opsBanner"] = self.settings["visa_ops_banner"]  # visa_instance.extension
        self.set_header("Cache-Control", "no-store")
        self.finish(
            _jinja.get_template(self.template).render(
                title=name,
                static_url=url_path_join(self.base_url, "visa/static/"),
                config=config,
                can_write=can_write,
                **self.page_vars,
            )
        )


class RoomHandler(JupyterHandler):
    """``{base_url}visa/api/room``: the room as the current person may see it.

    Everyone learns their own role and level (so the page can show "view only" when the room
    locks); the owner also sees who is connected and whether access requests are waiting.
    """

    @web.authenticated
    def get(self) -> None:
        room = self.settings["visa_room"]
        model = hub_model(self.current_user) or {"kind": "user", "name": room.owner, "scopes": []}
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(room.room_model(model)))


class PublicStaticHandler(JupyterHandler, web.StaticFileHandler):
    """The page's code (our script, noVNC's modules), restricted to a few top-level directories.

    Public like JupyterLab's own static assets: they hold no data and no secret, and a browser
    loads ES modules with `Sec-Fetch-Mode: cors` and no XSRF header, which JupyterHub's
    single-user auth (rightly) refuses for cookie-authenticated GETs, looping through OAuth.
    The page and the desktop websocket stay authenticated. tornado already refuses paths
    resolving outside ``path``; ``allowed`` also keeps noVNC's own app (vnc.html and friends)
    from being served on our origin.
    """

    def initialize(  # type: ignore[override]
        self, path: str, allowed: tuple[str, ...] = (), default_filename: str | None = None
    ) -> None:
        web.StaticFileHandler.initialize(self, path, default_filename)
        self.allowed = allowed

    def _check_path(self, path: str) -> None:
        normal = posixpath.normpath("/" + path).lstrip("/")
        if "\\" in path or "\0" in path or normal != path or normal.startswith(".."):
            raise web.HTTPError(404)
        if self.allowed and normal.split("/", 1)[0] not in self.allowed:
            raise web.HTTPError(404)

    @allow_unauthenticated  # public code (ServerApp.allow_unauthenticated_access is False)
    def head(self, path: str) -> Awaitable[None]:  # type: ignore[override]
        self._check_path(path)
        return web.StaticFileHandler.head(self, path)

    @allow_unauthenticated
    def get(self, path: str, include_body: bool = True) -> Awaitable[None]:  # type: ignore[override]
        self._check_path(path)
        return web.StaticFileHandler.get(self, path, include_body)

    def set_extra_headers(self, path: str) -> None:
        # Revalidate on each load: an upgraded noVNC or page must not mix with cached modules.
        self.set_header("Cache-Control", "no-cache")


def desktop_handlers(
    base_url: str, novnc_path: str, websocket_path: str
) -> list[tuple[str, type, dict[str, Any]]]:
    """The routes, built as data so a test can check them without a server."""
    static_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
    return [
        (url_path_join(base_url, r"visa/desktop/?"), DesktopPageHandler,
         {"websocket_path": websocket_path}),
        (url_path_join(base_url, r"visa/novnc/(.*)"), PublicStaticHandler,
         {"path": novnc_path, "allowed": ("core", "vendor")}),
        (url_path_join(base_url, r"visa/static/(.*)"), PublicStaticHandler,
         {"path": static_dir}),
    ]
