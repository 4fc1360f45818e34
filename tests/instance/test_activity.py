"""What counts as real use of an instance (visa_instance.activity), without a server: the tracker
with an injected clock, the message classifiers table by table, and the hooks' installation."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from jupyter_server.services.kernels.connection.base import serialize_binary_message, serialize_msg_to_ws_v1
from jupyter_server_terminals.handlers import TermSocket
from tornado import web

from visa_instance import activity
from visa_instance.activity import ActivityTracker, is_kernel_use, is_terminal_input, utcnow
from visa_instance.desktop_socket import idle_reason

T0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


class Clock:
    """A wall clock the test moves (`clock.now += timedelta(...)`)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def test_a_server_nobody_used_reports_its_start() -> None:
    tracker = ActivityTracker(T0, Clock())
    assert tracker.last_use is None
    assert tracker.last_activity() == T0


def test_the_latest_use_of_any_kind_wins() -> None:
    clock = Clock()
    tracker = ActivityTracker(T0, clock)
    clock.now = T0 + timedelta(hours=1)
    tracker.record("kernel")
    clock.now = T0 + timedelta(hours=3)
    tracker.record("desktop")
    clock.now = T0 + timedelta(days=2)  # time passing without use changes nothing
    assert tracker.last_activity() == T0 + timedelta(hours=3)
    assert tracker.last_use_by_kind == {"kernel": T0 + timedelta(hours=1), "desktop": T0 + timedelta(hours=3)}


def test_a_use_before_the_start_never_moves_activity_back() -> None:
    clock = Clock()
    tracker = ActivityTracker(T0, clock)
    clock.now = T0 - timedelta(minutes=5)  # the wall clock stepped back
    tracker.record("terminal")
    assert tracker.last_activity() == T0


def test_a_naive_start_is_taken_as_utc() -> None:
    assert ActivityTracker(T0.replace(tzinfo=None)).last_activity() == T0
    assert utcnow().tzinfo is not None  # what jupyterhub-singleuser compares against


def _msg(msg_type: str, channel: str = "shell", **content) -> dict:
    return {"header": {"msg_id": "1", "msg_type": msg_type, "session": "s", "username": "u", "version": "5.3",
                       "date": "2026-12-03T08:00:00Z"},
            "parent_header": {}, "metadata": {}, "content": content, "channel": channel, "buffers": []}


def _legacy(msg: dict) -> str:
    return json.dumps({k: v for k, v in msg.items() if k != "buffers"})


def _v1(msg: dict) -> bytes:
    return serialize_msg_to_ws_v1(msg, msg["channel"], pack=lambda part: json.dumps(part).encode())


@pytest.mark.parametrize(("message", "use"), [
    (_msg("execute_request", code="1+1", silent=False), True),
    (_msg("execute_request", code="1+1"), True),
    (_msg("execute_request", code="%who_ls", silent=True), False),  # an extension inspecting variables
    (_msg("input_reply", "stdin", value="yes"), True),  # answering input()
    (_msg("kernel_info_request"), False),  # Lab's own, on every connect
    (_msg("complete_request", code="pri", cursor_pos=3), False),
    (_msg("inspect_request", code="print", cursor_pos=5), False),
    (_msg("comm_info_request"), False),
    (_msg("comm_msg", data={}), False),
    (_msg("interrupt_request", "control"), False),
    (_msg("execute_request", "control", code="1"), False),  # not the shell channel
], ids=lambda v: v if isinstance(v, bool) else f"{v['channel']}:{v['header']['msg_type']}")
def test_kernel_messages_that_are_use_in_both_wire_formats(message: dict, use: bool) -> None:
    assert is_kernel_use(_legacy(message), None) is use
    assert is_kernel_use(serialize_binary_message(message), None) is use
    assert is_kernel_use(_v1(message), activity.V1_PROTOCOL) is use


@pytest.mark.parametrize(("raw", "subprotocol"), [
    ("not json", None), ("[]", None), ('{"header": {}}', None), ('{"header": "x", "content": 3}', None),
    (b"\x00\x01", None), (b"", activity.V1_PROTOCOL), (b"\xff" * 64, activity.V1_PROTOCOL),
])
def test_unreadable_kernel_messages_are_not_use_and_do_not_raise(raw, subprotocol) -> None:
    assert is_kernel_use(raw, subprotocol) is False


@pytest.mark.parametrize(("raw", "use"), [
    ('["stdin", "ls\\r"]', True),
    ('["stdin", ""]', True),
    ('["set_size", 24, 80, 600, 800]', False),  # the tab was resized
    ('["stdout", "x"]', False),
    ("[]", False), ("{}", False), ("stdin", False), (b"\xff", False), ("", False),
])
def test_terminal_messages_that_are_input(raw, use: bool) -> None:
    assert is_terminal_input(raw) is use


@pytest.mark.parametrize(("seconds", "text"), [
    (21600, "no input for 6 h"), (5400, "no input for 90 min"), (90, "no input for 90 s"), (2, "no input for 2 s"),
    (0.5, "no input for 0.5 s"),
])
def test_idle_reason(seconds: float, text: str) -> None:
    assert idle_reason(seconds) == text


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str, *args) -> None:
        self.lines.append(msg % args)

    warning = info


class _Connection:
    """Stands for the configured kernel websocket connection class: records what it forwards."""

    def __init__(self, settings: dict, subprotocol: str | None = None) -> None:
        self.websocket_handler = type("H", (), {"settings": settings})()
        self.subprotocol = subprotocol
        self.forwarded: list = []

    def handle_incoming_message(self, incoming_msg) -> None:
        self.forwarded.append(incoming_msg)


class _Term(TermSocket):
    """jupyter_server_terminals' handler, as a route target (never instantiated here)."""


def _app() -> web.Application:
    app = web.Application([], started=T0, kernel_websocket_connection_class=_Connection)
    app.add_handlers(".*", [(r"/terminals/websocket/(\w+)", _Term, {"term_manager": None})])
    return app


def test_install_makes_last_activity_real_use_only_and_wraps_the_hooks() -> None:
    app, clock, log = _app(), Clock(), _Log()
    tracker = activity.install(app, log, clock)
    assert app.settings["visa_activity"] is tracker
    assert app.last_activity() == T0

    conn_class = app.settings["kernel_websocket_connection_class"]
    conn = conn_class(app.settings)
    clock.now = T0 + timedelta(minutes=1)
    conn.handle_incoming_message(_legacy(_msg("kernel_info_request")))
    assert app.last_activity() == T0
    clock.now = T0 + timedelta(minutes=2)
    conn.handle_incoming_message(_legacy(_msg("execute_request", code="1")))
    assert app.last_activity() == T0 + timedelta(minutes=2)
    assert len(conn.forwarded) == 2  # everything still reaches the kernel

    rules = list(activity._handler_rules(app.default_router))
    term_rule = next(r for r in rules if issubclass(r.target, TermSocket))
    assert issubclass(term_rule.target, activity.TerminalUseMixin) and issubclass(term_rule.target, _Term)
    assert term_rule.target_kwargs == {"term_manager": None}
    assert any("terminal input" in line for line in log.lines)


def test_installing_twice_wraps_once() -> None:
    app = _app()
    activity.install(app, _Log())
    first = app.settings["kernel_websocket_connection_class"]
    activity.install(app, _Log())
    assert app.settings["kernel_websocket_connection_class"] is first
    assert activity.wrap_route_handlers(app, TermSocket, activity.TerminalUseMixin) == 0
