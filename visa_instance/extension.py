"""jupyter-server extension: the desktop page and noVNC, served by the single-user server.

Enabled by ``jupyter-config/jupyter_server_config.d/visa_instance.json`` (installed to
``etc/jupyter/jupyter_server_config.d``; the package's other settings are in
``etc/jupyter/jupyter_server_config.json``), configured as ``c.VisaDesktop.*``.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlencode

from jupyter_server.utils import url_path_join
from traitlets import Float, Unicode, default, validate
from traitlets.config import Configurable

from .activity import install as install_activity
from .authorizer import install_gate
from .broadcast import install as install_course_banner
from .desktop_socket import desktop_socket_handler
from .h5web import h5web_handlers
from .handlers import RoomHandler, desktop_handlers
from .home import prepare_lab_home
from .room import Room
from .snapshot import snapshot_routes


class VisaDesktop(Configurable):
    """Where the desktop page finds noVNC and the websocket to the VNC server."""

    novnc_path = Unicode(
        "/usr/share/novnc",
        help="""
        Directory holding noVNC's ES modules (``core/rfb.js``, ``vendor/``), served to logged-in
        users under ``{base_url}visa/novnc/``. Debian's ``novnc`` package installs them in
        /usr/share/novnc; nothing is loaded from a CDN.
        """,
    ).tag(config=True)

    websocket_path = Unicode(
        "desktop/",
        help="""
        Path, relative to the server's base URL, of the websocket the desktop page connects to.
        By default jupyter-server-proxy's raw socket bridge to the VNC unix socket
        (``desktop/``); point it at another handler (e.g. one that drops input from view-only
        guests) to replace that bridge.
        """,
    ).tag(config=True)

    @validate("novnc_path")
    def _valid_novnc_path(self, proposal: Any) -> str:
        path = os.path.abspath(proposal["value"])
        if not os.path.isfile(os.path.join(path, "core", "rfb.js")):
            self.log.warning("VisaDesktop.novnc_path %s has no core/rfb.js", path)
        return path

    collab_url = Unicode(
        help="""
        URL of the VISA collaboration service as this server reaches it (its API and the
        instance channel), e.g. ``http://127.0.0.1:8090/services/visa-collab/``. Default:
        ``$VISA_COLLAB_URL``, set by the hub. Empty: no service (owner-away policy "lock",
        no audit of connections).
        """,
    ).tag(config=True)

    @default("collab_url")
    def _default_collab_url(self) -> str:
        return os.environ.get("VISA_COLLAB_URL", "")

    collab_prefix = Unicode(
        help="""
        Path of the collaboration service as browsers reach it (same origin), e.g.
        ``/services/visa-collab/``: the desktop page shows its access-request prompt to the
        owner. Default: ``$VISA_COLLAB_PREFIX``.
        """,
    ).tag(config=True)

    @default("collab_prefix")
    def _default_collab_prefix(self) -> str:
        return os.environ.get("VISA_COLLAB_PREFIX", "")

    ops_prefix = Unicode(
        help="""
        Path of the visa-ops service as browsers reach it (same origin), e.g.
        ``/services/visa-ops/``: the desktop page's bar embeds its banner (notifications, this
        instance's lifetime or inactivity warning, "Ask for more time"); if the service answers
        404 the banner stays hidden. Default: ``$VISA_OPS_PREFIX``, else
        ``{$JUPYTERHUB_BASE_URL}services/visa-ops/`` under JupyterHub. Empty: no banner.
        """,
    ).tag(config=True)

    @default("ops_prefix")
    def _default_ops_prefix(self) -> str:
        if "VISA_OPS_PREFIX" in os.environ:
            return os.environ["VISA_OPS_PREFIX"]
        if not os.environ.get("JUPYTERHUB_USER"):
            return ""
        return url_path_join(os.environ.get("JUPYTERHUB_BASE_URL") or "/", "services/visa-ops/")

    def ops_banner_url(self, owner: str, server: str) -> str:
        """The banner of this instance (``banner?owner=&server=``), or "" without the service."""
        if not self.ops_prefix or not owner:
            return ""
        return url_path_join(self.ops_prefix, "banner") + "?" + urlencode({"owner": owner, "server": server})

    presence_timeout = Float(
        help="""
        Seconds after a person's last JupyterLab request (with no websocket open) before they
        count as gone. JupyterLab keeps websockets open while its page is open, so this mostly
        matters for pages that were closed. Default: ``$VISA_PRESENCE_TIMEOUT`` or 60.
        """,
    ).tag(config=True)

    @default("presence_timeout")
    def _default_presence_timeout(self) -> float:
        return _env_seconds("VISA_PRESENCE_TIMEOUT", 60.0)

    owner_away_grace = Float(
        help="""
        Seconds after the owner's last connection closes before the owner-away policy applies
        (a page reload does not lock the room). Default: ``$VISA_OWNER_AWAY_GRACE`` or 10.
        """,
    ).tag(config=True)

    @default("owner_away_grace")
    def _default_owner_away_grace(self) -> float:
        return _env_seconds("VISA_OWNER_AWAY_GRACE", 10.0)

    idle_disconnect = Float(
        help="""
        Seconds without input (keyboard, pointer, clipboard) after which a desktop connection is
        closed; the page says why and reconnecting works. A tab left open on a shared desktop
        otherwise holds a member's session (and their place in the room) for days. 0: never.
        Default: ``$VISA_DESKTOP_IDLE_DISCONNECT`` or 21600 (6 h).
        """,
    ).tag(config=True)

    @default("idle_disconnect")
    def _default_idle_disconnect(self) -> float:
        return _env_seconds("VISA_DESKTOP_IDLE_DISCONNECT", 6 * 3600.0)

    @validate("idle_disconnect")
    def _valid_idle_disconnect(self, proposal: Any) -> float:
        if proposal["value"] < 0:
            raise ValueError("idle_disconnect must be 0 (never) or a number of seconds")
        return proposal["value"]

    @validate("websocket_path")
    def _valid_websocket_path(self, proposal: Any) -> str:
        value = proposal["value"].strip()
        if "://" in value or value.startswith("//") or ".." in value.split("/"):
            raise ValueError(f"websocket_path must be a path below the base URL, not {value!r}")
        return value.lstrip("/")


def _env_seconds(name: str, default: float) -> float:
    """A duration from the hub's environment; a bad value is logged and replaced by the default."""
    import logging

    raw = os.environ.get(name, "")
    try:
        value = float(raw) if raw else default
        if not 0 <= value <= 86400:
            raise ValueError(raw)
        return value
    except ValueError:
        logging.getLogger("visa_instance").warning("%s=%r is not a duration in seconds; using %g",
                                                   name, raw[:20], default)
        return default


def _add_handlers_first(web_app: Any, handlers: list) -> None:
    """Add routes that win over every route added before (tornado tries rules in order).

    ``add_handlers`` inserts its rule just before tornado's final catch-all rule; we move it
    to the front so our ``desktop/`` websocket shadows jupyter-server-proxy's raw bridge.
    """
    web_app.add_handlers(".*", handlers)
    rules = web_app.default_router.rules
    rules.insert(0, rules.pop(len(rules) - 2))


def _keep_memory_private() -> bool:
    """Make this server process non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``, Linux).

    Kernels, terminals and everything a member starts run as the same Unix account as this
    server. Without this, any of them could read the server's memory (``/proc/<pid>/mem``,
    ``ptrace``), where the OAuth tokens of the people using the instance and the cookie secret
    live: a member could then act as the owner after being removed. Processes exec'd from here
    are dumpable again (the kernel resets the flag at execve), so debugging a kernel works.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    PR_SET_DUMPABLE = 4
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _link_jupyter_server_extension(serverapp: Any) -> None:
    """Offer the instrument panels: jupyter-server links every extension before loading any,
    so jupyter-server-proxy (loaded before us, alphabetically) finds them in its config."""
    import sys

    from .instrument import link

    link(serverapp, sys.executable)


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Register the routes and the room (jupyter-server calls this once at start-up)."""
    config = VisaDesktop(parent=serverapp)
    web_app = serverapp.web_app
    base_url = web_app.settings["base_url"]
    web_app.add_handlers(
        ".*", desktop_handlers(base_url, config.novnc_path, config.websocket_path)
    )

    identity_provider = serverapp.identity_provider
    hub_auth = getattr(identity_provider, "hub_auth", None)
    room = Room.from_env(hub_auth, config.collab_url, presence_timeout=config.presence_timeout,
                         owner_away_grace=config.owner_away_grace, logger=serverapp.log)
    web_app.settings["visa_room"] = room
    web_app.settings["visa_collab_prefix"] = config.collab_prefix if room.link else ""
    web_app.settings["visa_desktop_idle_disconnect"] = config.idle_disconnect
    web_app.settings["visa_ops_banner"] = config.ops_banner_url(
        os.environ.get("JUPYTERHUB_USER", ""), os.environ.get("JUPYTERHUB_SERVER_NAME", ""))
    install_activity(web_app, serverapp.log)  # the hub hears of real use only
    prepare_lab_home(serverapp)  # the `data` link and the starter notebook (visa_instance/home.py)
    gated = install_gate(identity_provider, room, base_url)
    if gated and not _keep_memory_private():
        serverapp.log.warning("Could not make the server non-dumpable: code in the instance can read its memory")

    socket_class, socket_kwargs = desktop_socket_handler()
    _add_handlers_first(web_app, [(url_path_join(base_url, "desktop", "(.*)"), socket_class, socket_kwargs)])
    web_app.add_handlers(".*", snapshot_routes(base_url, socket_kwargs["state"]))  # the trainer's grid
    install_course_banner(web_app, base_url)  # a course instance: the trainer's broadcast, who is helping
    _add_instrument_routes(serverapp, web_app, base_url)
    if routes := h5web_handlers(base_url, serverapp.root_dir):  # a corrupt .nxs: a 400, not a 500
        _add_handlers_first(web_app, routes)
    web_app.add_handlers(".*", [(url_path_join(base_url, r"visa/api/room/?"), RoomHandler)])
    serverapp.log.info(
        "VISA desktop page at %svisa/desktop (noVNC from %s); member roles %s; collaboration service %s",
        base_url, config.novnc_path, "enforced" if gated else "off (not under JupyterHub)",
        config.collab_url or "not configured",
    )


def _add_instrument_routes(serverapp: Any, web_app: Any, base_url: str) -> None:
    """The instrument panels' pages and gated websockets (`visa_instance.instrument_page`)."""
    import sys

    from .instrument import VisaInstruments
    from .instrument_page import page_routes, socket_routes

    instruments = VisaInstruments(parent=serverapp)  # the same answer as at link time
    panels = list(instruments.panels())
    if not panels:
        return
    web_app.add_handlers(".*", page_routes(base_url, panels))
    for route in socket_routes(base_url, instruments.server_processes(sys.executable)):
        _add_handlers_first(web_app, [route])
    serverapp.log.info("VISA instrument panels: %s", ", ".join(panels))


async def _start_jupyter_server_extension(serverapp: Any) -> None:
    """Start the room's background work once the server's event loop runs."""
    room = serverapp.web_app.settings.get("visa_room")
    if room is not None:
        room.start()
