"""The desktop websocket at ``{base_url}desktop/``: jupyter-server-proxy's raw socket bridge to
the VNC unix socket, with the member's access checked and their input filtered.

The class is built from jupyter-server-proxy's own handler for our ``desktop`` server process
(`visa_instance.desktop.setup_desktop`), so the launcher is still started, supervised and
found on its unix socket exactly as before; this subclass

* refuses the websocket (403, before any desktop is started) to anyone whose level is
  ``none``;
* parses what the browser sends (:mod:`visa_instance.rfb_filter`) and, while the member is
  view-only (GUEST, or USER in a locked room), drops keyboard, pointer, clipboard, resize and
  power messages — at the server: a guest who crafts input by hand gets nowhere;
* closes the connection on anything that is not RFB, and when the member's access ends;
* counts only forwarded *input* as activity (an open tab showing a static desktop is idle).

It is registered ahead of jupyter-server-proxy's own route for the same path, which is
therefore never reached.
"""

from __future__ import annotations

from typing import Any

from jupyter_server_proxy.handlers import ProxyHandler
from tornado import web

from .authorizer import hub_model
from .rfb_filter import RfbProtocolError
from .room import Connection

CLOSE_PROTOCOL_ERROR = 4400


class DesktopSocketMixin:
    """Mixed in ahead of jupyter-server-proxy's generated ``desktop`` handler class."""

    _visa_conn: Connection | None = None

    def _is_websocket(self) -> bool:
        return self.request.headers.get("Upgrade", "").lower() == "websocket"  # type: ignore[attr-defined]

    async def prepare(self, *args: Any, **kwargs: Any) -> None:
        if self._is_websocket():
            # a websocket is refused, never sent to the login page (jupyter-server redirects
            # unknown callers there since ServerApp.allow_unauthenticated_access is False)
            user = self.identity_provider.get_user(self)  # type: ignore[attr-defined]
            if hasattr(user, "__await__"):
                user = await user
            if user is None:
                raise web.HTTPError(403, "Log in to use this desktop.")
        await super().prepare(*args, **kwargs)  # type: ignore[misc]  # login
        if not self._is_websocket():
            return
        room = self.settings["visa_room"]  # type: ignore[attr-defined]
        user = self.current_user  # type: ignore[attr-defined]
        model = hub_model(user)
        if model is None:
            # a plain jupyter server (token login): the token holder is the owner
            model = {"kind": "user", "name": room.owner}
        conn = room.desktop_session(self, model)
        if conn is None:
            raise web.HTTPError(403, "Your role in this instance does not give access to its desktop now.")
        self._visa_conn = conn

    async def open(self, *args: Any, **kwargs: Any) -> None:
        room = self.settings["visa_room"]  # type: ignore[attr-defined]
        room.desktop_opened(self._visa_conn)
        try:
            await super().open(*args, **kwargs)  # type: ignore[misc]  # starts the desktop if needed
        except Exception:
            room.desktop_closed(self._visa_conn, reason="desktop unavailable")
            raise

    def on_message(self, message: bytes | str) -> None:
        conn = self._visa_conn
        if conn is None or conn.closed:
            return
        if isinstance(message, str):
            message = message.encode("utf-8")
        try:
            fed = conn.stream.feed(message, lambda: conn.view_only)
        except RfbProtocolError as e:
            self.log.warning("Desktop connection of %s closed: %s", conn.name, e)  # type: ignore[attr-defined]
            conn.closed = True
            self.close(CLOSE_PROTOCOL_ERROR, "protocol error")  # type: ignore[attr-defined]
            return
        if fed.dropped:
            if not conn.dropped_input:
                self.log.info("Dropping input from view-only %s (%s)", conn.name, conn.role)  # type: ignore[attr-defined]
            conn.dropped_input += len(fed.dropped)
        if fed.forward:
            self.ws_transp.write(fed.forward)  # type: ignore[attr-defined]
        if fed.input_forwarded:
            ProxyHandler._record_activity(self)  # type: ignore[arg-type]

    def on_ping(self, data: bytes) -> None:
        """Keep-alives are not activity."""

    def _record_activity(self) -> None:
        """Server output (screen updates) is not activity; input is counted in on_message."""

    def on_close(self) -> None:
        if self._visa_conn is not None:
            self.settings["visa_room"].desktop_closed(self._visa_conn)  # type: ignore[attr-defined]
        super().on_close()  # type: ignore[misc]


def desktop_socket_handler() -> tuple[type, dict]:
    """Our handler class for ``desktop/(.*)`` and its init kwargs (jsp's process state)."""
    from jupyter_server_proxy.config import ServerProcess

    from .desktop import setup_desktop

    base, kwargs = ServerProcess(name="desktop", **setup_desktop()).make_proxy_handler()
    cls = type("VisaDesktopSocketHandler", (DesktopSocketMixin, base), {})
    return cls, kwargs
