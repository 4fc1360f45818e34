"""Real use through a real jupyter-server with our extension: what ``last_activity`` (what
jupyterhub-singleuser posts to the hub, also shown by /api/status) counts, and the desktop's
disconnection after a time without input."""
from __future__ import annotations

import json
import struct
import time
import uuid
from collections.abc import Callable

import requests
import websocket

from tests.instance.jupyter import JupyterServer
from tests.instance.test_desktop_socket import connect, last_activity
from tests.support import wait_for


def api(server: JupyterServer, method: str, path: str, **kw) -> requests.Response:
    r = requests.request(method, f"{server.url}{path}", headers={"Authorization": f"token {server.token}"},
                         timeout=30, **kw)
    r.raise_for_status()
    return r


def open_ws(server: JupyterServer, path: str) -> websocket.WebSocket:
    return websocket.create_connection(f"ws://127.0.0.1:{server.port}/{path}?token={server.token}", timeout=10)


def kernel_request(ws: websocket.WebSocket, msg_type: str, channel: str = "shell", **content) -> str:
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({"header": {"msg_id": msg_id, "msg_type": msg_type, "username": "t", "session": "s",
                                   "version": "5.3"},
                        "parent_header": {}, "metadata": {}, "channel": channel, "content": content}))
    return msg_id


def until_idle(ws: websocket.WebSocket, msg_id: str) -> list[dict]:
    """The kernel's messages answering `msg_id`, up to its return to idle."""
    seen = []
    while True:
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") == msg_id:
            seen.append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return seen


def stays(value: Callable[[], object], expected: object, action: Callable[[], None], rounds: int = 5) -> None:
    """`action` repeated leaves `value()` at `expected`."""
    for _ in range(rounds):
        action()
        assert value() == expected


def test_kernel_execution_is_use_and_lab_polling_is_not(jupyter_server) -> None:
    server = jupyter_server()
    specs = api(server, "GET", "api/kernelspecs").json()  # one stack, one kernel: no stock "Python 3" beside it
    assert (specs["default"], sorted(specs["kernelspecs"])) == ("data-analysis", ["data-analysis"]), specs
    started = last_activity(server)
    kernel = api(server, "POST", "api/kernels", json={"name": "data-analysis"}).json()["id"]
    ws = open_ws(server, f"api/kernels/{kernel}/channels")

    def lab_tab_left_open() -> None:  # what an open Lab tab does by itself
        for path in ("api/kernels", "api/sessions", "api/contents", "api/terminals", f"api/kernels/{kernel}"):
            api(server, "GET", path)
        until_idle(ws, kernel_request(ws, "kernel_info_request"))
        until_idle(ws, kernel_request(ws, "execute_request", code="x = 1", silent=True))  # an inspector

    stays(lambda: last_activity(server), started, lab_tab_left_open)
    replies = until_idle(ws, kernel_request(ws, "execute_request", code="print(6 * 7)", silent=False))
    assert any(m["msg_type"] == "stream" and m["content"]["text"] == "42\n" for m in replies)
    after_use = wait_for(lambda: (v := last_activity(server)) != started and v, 10, "execution to count")
    assert after_use > started
    stays(lambda: last_activity(server), after_use, lab_tab_left_open, rounds=2)
    ws.close()


def test_terminal_input_is_use_and_its_output_is_not(jupyter_server) -> None:
    server = jupyter_server()
    started = last_activity(server)
    name = api(server, "POST", "api/terminals").json()["name"]
    ws = open_ws(server, f"terminals/websocket/{name}")

    def output_containing(text: str) -> Callable[[], bool]:
        def read() -> bool:
            msg = json.loads(ws.recv())
            return msg[0] == "stdout" and text in msg[1]
        return read

    ws.send(json.dumps(["set_size", 24, 80, 480, 640]))  # the tab opens (or is resized)
    wait_for(output_containing(""), 10, "the shell's prompt")
    assert last_activity(server) == started
    ws.send(json.dumps(["stdin", "for i in 1 2 3; do sleep 0.2; done; echo done-$((6*7))\r"]))
    after_typing = wait_for(lambda: (v := last_activity(server)) != started and v, 10, "typing to count")
    wait_for(output_containing("done-42"), 10, "the command's output, after the input")
    assert last_activity(server) == after_typing
    ws.close()


def close_frame(ws: websocket.WebSocket) -> tuple[int, str] | None:
    """(code, reason) if the next frame within the socket's timeout is a close; None if none came."""
    try:
        opcode, frame = ws.recv_data_frame(True)
    except websocket.WebSocketTimeoutException:
        return None
    if opcode != websocket.ABNF.OPCODE_CLOSE:
        return None
    return struct.unpack(">H", frame.data[:2])[0], frame.data[2:].decode()


def test_a_desktop_connection_without_input_is_closed_and_one_with_input_is_not(jupyter_server) -> None:
    server = jupyter_server(VISA_SCREEN="800x600", VISA_DESKTOP_IDLE_DISCONNECT="3")
    idle, busy = connect(server), connect(server)
    idle.screen()
    busy.screen()
    opened = time.monotonic()
    idle.ws.settimeout(0.3)

    def typing_until_the_idle_one_closes():
        busy.key(0xFFE1, True)  # shift: input that draws nothing
        busy.key(0xFFE1, False)
        return close_frame(idle.ws)

    code, reason = wait_for(typing_until_the_idle_one_closes, 20, "the idle connection to be closed")
    assert (code, reason) == (4408, "no input for 3 s")
    assert time.monotonic() - opened >= 2.9
    busy.request()
    busy.read_update()  # still connected, past the timeout
    assert "no input for 3 s" in server.log()
    again = connect(server)  # reconnecting works
    again.screen()
    for client in (again, busy, idle):
        client.close()
