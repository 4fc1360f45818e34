"""The desktop websocket at ``{base_url}desktop/``: jupyter-server-proxy's raw socket bridge to
the VNC unix socket, with the member's access checked and their input filtered.

The class is built from jupyter-server-proxy's own handler for our ``desktop`` server process
(`visa_instance.desktop.setup_desktop`), so the launcher is still started, supervised and
found on its unix socket exactly as before; this subclass

* refuses the websocket (403, before any desktop is started) to anyone whose level is
  ``none``;
* parses what the browser sends (:mod:`visa_instance.rfb_filter`) and, while the member is
  view-only (GUEST, or USER in a locked room), drops keyboard, pointer, clipboard, resize and
  power messages — at the server: a guest who crafts input by hand gets nowhere — and the
  clipboard the VNC server sends back (ServerCutText);
* closes the connection on anything that is not RFB, and when the member's access ends;
* counts only forwarded *input* as real use (`visa_instance.activity`: an open tab showing a
  static desktop is idle), and closes a connection that has sent no input for
  ``c.VisaDesktop.idle_disconnect`` (6 h) with code 4408, which the page explains.

It is registered ahead of jupyter-server-proxy's own route for the same path, which is
therefore never reached.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tornado import web
from tornado.ioloop import IOLoop

from .authorizer import hub_model
from .rfb_filter import RfbProtocolError
from .room import Connection

CLOSE_PROTOCOL_ERROR = 4400
CLOSE_IDLE = 4408  # no input for idle_disconnect seconds; the page says so and does not retry


def idle_reason(seconds: float) -> str:
    """The close reason the page shows, e.g. "no input for 6 h" (a close reason is ≤ 123 bytes)."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"no input for {seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"no input for {seconds / 60:g} min"
    return f"no input for {seconds:g} s"


class DesktopSocketMixin:
    """Mixed in ahead of jupyter-server-proxy's generated ``desktop`` handler class."""

    _visa_conn: Connection | None = None
    _visa_idle_timer: object | None = None
    _visa_last_input: float = 0.0
    _visa_may_input: bool = True  # per person, beside the room's level (an instrument panel's right)
    visa_may_input: Callable[[Mapping[str, Any], str | None], bool] | None = None

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
        if self.visa_may_input is not None:
            self._visa_may_input = bool(self.visa_may_input(model, conn.role))

    async def open(self, *args: Any, **kwargs: Any) -> None:
        room = self.settings["visa_room"]  # type: ignore[attr-defined]
        room.desktop_opened(self._visa_conn)
        try:
            await super().open(*args, **kwargs)  # type: ignore[misc]  # starts the desktop if needed
        except Exception:
            room.desktop_closed(self._visa_conn, reason="desktop unavailable")
            raise
        # an echoed key is a small update: send it now, not once the previous segment is acked
        # (Nagle; tornado leaves it on). CHP sets TCP_NODELAY on its own sockets.
        self.set_nodelay(True)  # type: ignore[attr-defined]
        self._visa_last_input = IOLoop.current().time()
        self._schedule_idle_check()

    @property
    def _idle_disconnect(self) -> float:
        return float(self.settings.get("visa_desktop_idle_disconnect") or 0)  # type: ignore[attr-defined]

    def _schedule_idle_check(self) -> None:
        """One timer per connection, at the earliest moment it could be idle (no polling)."""
        if self._idle_disconnect > 0:
            loop = IOLoop.current()
            self._visa_idle_timer = loop.call_at(self._visa_last_input + self._idle_disconnect, self._idle_check)

    def _idle_check(self) -> None:
        self._visa_idle_timer = None
        conn = self._visa_conn
        if conn is None or conn.closed:
            return
        if IOLoop.current().time() - self._visa_last_input < self._idle_disconnect:
            self._schedule_idle_check()  # input came meanwhile
            return
        reason = idle_reason(self._idle_disconnect)
        self.log.info("Desktop connection of %s closed: %s", conn.name, reason)  # type: ignore[attr-defined]
        self.close(CLOSE_IDLE, reason)  # type: ignore[attr-defined]

    def on_message(self, message: bytes | str) -> None:
        conn = self._visa_conn
        if conn is None or conn.closed:
            return
        if isinstance(message, str):
            message = message.encode("utf-8")
        try:
            fed = conn.stream.feed(message, self._visa_view_only)
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
            self._visa_last_input = IOLoop.current().time()
            tracker = self.settings.get("visa_activity")  # type: ignore[attr-defined]
            if tracker is not None:
                tracker.record("desktop")

    def _visa_view_only(self) -> bool:
        conn = self._visa_conn
        return conn is None or conn.view_only or not self._visa_may_input

    def write_message(self, message: bytes | str | dict, binary: bool = False) -> Any:
        """What the VNC server sends (jsp's raw protocol calls this): no clipboard for view-only members."""
        conn = self._visa_conn
        if binary and conn is not None and conn.stream is not None:
            if conn.closed:  # closing (a protocol error, access ended): nothing more reaches the page
                return None
            try:
                message = conn.stream.server.feed(bytes(message), self._visa_view_only)  # type: ignore[arg-type]
            except RfbProtocolError as e:
                self.log.warning("Desktop connection of %s closed: server %s", conn.name, e)  # type: ignore[attr-defined]
                conn.closed = True
                self.close(CLOSE_PROTOCOL_ERROR, "protocol error")  # type: ignore[attr-defined]
                return None
            if not message:
                return None
        return super().write_message(message, binary)  # type: ignore[misc]

    def on_ping(self, data: bytes) -> None:
        """Keep-alives are not activity."""

    def _record_activity(self) -> None:
        """Server output (screen updates) is not activity; input is counted in on_message."""

    def on_close(self) -> None:
        if self._visa_idle_timer is not None:
            IOLoop.current().remove_timeout(self._visa_idle_timer)
            self._visa_idle_timer = None
        if self._visa_conn is not None:
            self.settings["visa_room"].desktop_closed(self._visa_conn)  # type: ignore[attr-defined]
        super().on_close()  # type: ignore[misc]


def desktop_socket_handler(name: str = "desktop", process: dict | None = None,
                           may_input: Callable[[Mapping[str, Any], str | None], bool] | None = None
                           ) -> tuple[type, dict]:
    """Our handler class for ``<name>/(.*)`` and its init kwargs (jsp's process state).

    ``process`` is the ServerProcess configuration (default: the desktop's); the instrument
    panels' displays (`visa_instance.instrument`) are served the same way. ``may_input(model,
    role)``: a per-person rule on top of the room's level (False: input dropped as a GUEST's).
    """
    from jupyter_server_proxy.config import ServerProcess

    from .desktop import setup_desktop

    base, kwargs = ServerProcess(name=name, **(process or setup_desktop())).make_proxy_handler()
    cls = type("VisaDesktopSocketHandler", (DesktopSocketMixin, base),
               {"visa_may_input": staticmethod(may_input) if may_input else None})
    return cls, kwargs
