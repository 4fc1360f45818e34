"""The time of this server's last *real use*, and the only activity it reports to the hub.

jupyter-server's ``last_activity()`` counts every API request (Lab polls its sessions, kernels and
contents every few seconds while a tab is open), every kernel message (status, heartbeats) and
terminal *output*; jupyter-server-proxy counts the VNC stream. ``jupyterhub-singleuser`` posts that
time to the hub, so an open tab that nobody looks at kept an instance "active" for ever and no
inactivity rule (ours or ``jupyterhub-idle-culler``) could ever apply. Real use is:

* kernel execution asked by a person: an ``execute_request`` (not ``silent``) on the shell
  channel, or an ``input_reply`` (an answer to ``input()``), from a kernel websocket;
* terminal input: a terminado ``stdin`` message (not ``set_size``, not output);
* desktop input forwarded to the VNC server (`visa_instance.desktop_socket`).

`install` puts an `ActivityTracker` in ``web_app.settings["visa_activity"]``, makes
``web_app.last_activity()`` return the tracker's time, and wraps the configured kernel websocket
connection class and jupyter_server_terminals' websocket handler so that they tell the tracker.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from jupyter_server.services.kernels.connection.base import deserialize_binary_message

#: kernel messages a person sends on purpose (channel, msg_type)
KERNEL_USE = frozenset({("shell", "execute_request"), ("stdin", "input_reply")})
V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"


def utcnow() -> datetime:
    return datetime.now(UTC)


class ActivityTracker:
    """When this server was last really used, by kind (``kernel``, ``terminal``, ``desktop``).

    Recording is a dict assignment: it runs on every keystroke of the desktop and terminal.
    """

    def __init__(self, started: datetime, clock: Callable[[], datetime] = utcnow) -> None:
        self.started = started if started.tzinfo else started.replace(tzinfo=UTC)
        self.clock = clock
        self.last_use_by_kind: dict[str, datetime] = {}

    def record(self, kind: str) -> None:
        self.last_use_by_kind[kind] = self.clock()

    @property
    def last_use(self) -> datetime | None:
        return max(self.last_use_by_kind.values(), default=None)

    def last_activity(self) -> datetime:
        """max(server start, last real use): what the hub's ``last_activity`` should be.

        The start counts so a new server is not culled before anyone could use it (and
        jupyterhub-singleuser sends nothing when this returns nothing); nothing else counts, so
        an open tab that nobody uses lets the hub's inactivity rules and the idle-culler apply.
        """
        last_use = self.last_use
        return self.started if last_use is None or last_use < self.started else last_use


# ------------------------------------------------------------------ what counts, as pure functions


def v1_parts(message: bytes) -> list[bytes]:
    """The parts (channel, header, parent header, metadata, content, buffers...) of a v1-protocol
    message. Bounded: jupyter-server's own parser loops over whatever offset count the first 8
    bytes claim (2**64 for a hostile client), this one refuses a count the message cannot hold."""
    count = int.from_bytes(message[:8], "little")
    if not 2 <= count <= len(message) // 8 - 1:
        raise ValueError("bad offset count")
    offsets = [int.from_bytes(message[8 * (i + 1):8 * (i + 2)], "little") for i in range(count)]
    return [message[start:stop] for start, stop in zip(offsets, offsets[1:], strict=False)]


def kernel_message_kind(message: str | bytes, subprotocol: str | None) -> tuple[str, str, dict] | None:
    """(channel, msg_type, content) of a browser→kernel websocket message; None if unreadable.

    Handles both of jupyter-server's wire formats: the v1 binary protocol and the legacy JSON
    (text, or binary with buffers).
    """
    try:
        if subprotocol == V1_PROTOCOL:
            channel_raw, header_raw, _parent, _metadata, content_raw, *_buffers = v1_parts(message)
            channel, header, content = channel_raw.decode(), json.loads(header_raw), json.loads(content_raw)
        else:
            msg = deserialize_binary_message(message) if isinstance(message, bytes) else json.loads(message)
            channel, header, content = msg.get("channel") or "shell", msg["header"], msg.get("content") or {}
        return str(channel), str(header["msg_type"]), content if isinstance(content, dict) else {}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, struct.error):
        return None  # malformed: jupyter-server logs and drops it; not use either way


def is_kernel_use(message: str | bytes, subprotocol: str | None) -> bool:
    """An execution (or an answer to ``input()``) a person asked for; silent executions
    (extensions inspecting variables, completers) are not use."""
    kind = kernel_message_kind(message, subprotocol)
    if kind is None:
        return False
    channel, msg_type, content = kind
    return (channel, msg_type) in KERNEL_USE and not content.get("silent")


def is_terminal_input(message: str | bytes) -> bool:
    """A terminado ``["stdin", text]`` message (typing or pasting), not a resize."""
    try:
        command = json.loads(message)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(command, list) and bool(command) and command[0] == "stdin"


# ------------------------------------------------------------------ the hooks


class KernelUseMixin:
    """Mixed in ahead of the configured ``ServerApp.kernel_websocket_connection_class``."""

    def handle_incoming_message(self, incoming_msg: Any) -> None:
        if is_kernel_use(incoming_msg, getattr(self, "subprotocol", None)):
            tracker = self.websocket_handler.settings.get("visa_activity")  # type: ignore[attr-defined]
            if tracker is not None:
                tracker.record("kernel")
        super().handle_incoming_message(incoming_msg)  # type: ignore[misc]


class TerminalUseMixin:
    """Mixed in ahead of jupyter_server_terminals' ``TermSocket``."""

    async def on_message(self, message: Any) -> None:
        if is_terminal_input(message):
            tracker = self.settings.get("visa_activity")  # type: ignore[attr-defined]
            if tracker is not None:
                tracker.record("terminal")
        await super().on_message(message)  # type: ignore[misc]


def with_mixin(mixin: type, base: type) -> type:
    """``base`` with ``mixin`` in front (once: wrapping twice would count twice)."""
    if issubclass(base, mixin):
        return base
    return type(f"Visa{base.__name__}", (mixin, base), {})


def _handler_rules(router: Any) -> Iterator[Any]:
    """Every tornado rule whose target is a handler class, through nested routers."""
    for rule in getattr(router, "rules", ()):
        if isinstance(rule.target, type):
            yield rule
        else:
            yield from _handler_rules(rule.target)


def wrap_route_handlers(web_app: Any, base: type, mixin: type) -> int:
    """Put ``mixin`` in front of every route handler that is a ``base``; the number replaced.

    Keeps each route's pattern and init arguments (jupyter_server_terminals passes its
    terminal manager), so the handler works exactly as before.
    """
    count = 0
    for rule in _handler_rules(web_app.default_router):
        if issubclass(rule.target, base) and not issubclass(rule.target, mixin):
            rule.target = with_mixin(mixin, rule.target)
            count += 1
    return count


def install(web_app: Any, log: Any, clock: Callable[[], datetime] = utcnow) -> ActivityTracker:
    """Make ``web_app.last_activity()`` (what jupyterhub-singleuser reports) mean real use."""
    tracker = ActivityTracker(web_app.settings["started"], clock)
    web_app.settings["visa_activity"] = tracker
    web_app.last_activity = tracker.last_activity  # shadows ServerWebApplication.last_activity

    kernel_class = web_app.settings.get("kernel_websocket_connection_class")
    if kernel_class is not None:
        web_app.settings["kernel_websocket_connection_class"] = with_mixin(KernelUseMixin, kernel_class)
    else:
        log.warning("No kernel websocket connection class: kernel execution will not count as use")

    try:
        from jupyter_server_terminals.handlers import TermSocket
    except ImportError:
        terminals = 0
    else:
        terminals = wrap_route_handlers(web_app, TermSocket, TerminalUseMixin)
    log.info("Activity reported to the hub: real use only (kernel execution, %s, desktop input)",
             "terminal input" if terminals else "no terminals")
    return tracker
