"""jupyter-server extension: the desktop page and noVNC, served by the single-user server.

Enabled by ``jupyter-config/jupyter_server_config.d/visa_instance.json`` (installed to
``etc/jupyter/jupyter_server_config.d``), configured as ``c.VisaDesktop.*``.
"""

from __future__ import annotations

import os
from typing import Any

from traitlets import Unicode, validate
from traitlets.config import Configurable

from .handlers import desktop_handlers


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

    @validate("websocket_path")
    def _valid_websocket_path(self, proposal: Any) -> str:
        value = proposal["value"].strip()
        if "://" in value or value.startswith("//") or ".." in value.split("/"):
            raise ValueError(f"websocket_path must be a path below the base URL, not {value!r}")
        return value.lstrip("/")


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Register the routes (jupyter-server calls this once at start-up)."""
    config = VisaDesktop(parent=serverapp)
    base_url = serverapp.web_app.settings["base_url"]
    serverapp.web_app.add_handlers(
        ".*", desktop_handlers(base_url, config.novnc_path, config.websocket_path)
    )
    serverapp.log.info(
        "VISA desktop page at %svisa/desktop (noVNC from %s)", base_url, config.novnc_path
    )
