"""What idle open pages cost: N event streams held open on the collaboration service.

``python bench/collab_push.py --pages 2000 --hold 120`` starts the service in a child process
(as `visa_collab.app` builds it, 30 s keep-alives) against an HTTP stand-in for the hub's REST
API that counts requests (`tests/collab/test_push.HttpHub`), opens N streams (half as the hub's
home page, half as a desktop prompt), then holds them and reports the hub requests and the
service's CPU for the opening and for the idle period, as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


async def serve(pages: int, port: int, hub_port: int, state: Path) -> None:
    from jupyterhub.services.auth import HubOAuth
    from tornado.httpserver import HTTPServer

    from tests.collab.fakehub import FakeHub
    from tests.collab.test_push import ACCESS, SERVICE, HttpHub
    from visa_collab import db
    from visa_collab.app import make_app, raise_open_files_limit
    from visa_collab.collab import Collaboration
    from visa_collab.hubapi import HubAPI

    raise_open_files_limit()
    fake = FakeHub()
    for i in range(pages):
        fake.add_person(f"u{i}", ["proposal:P-1", "role:user"])
        fake.add_server(f"u{i}", "a", "P-1")
    hub = HttpHub(fake)
    HTTPServer(hub.app).listen(hub_port, "127.0.0.1")
    api = f"http://127.0.0.1:{hub_port}/hub/api"
    engine = db.connect(f"sqlite:///{tempfile.mkdtemp()}/collab.sqlite")
    db.migrate(engine)
    collab = Collaboration(engine, HubAPI(api, "bench"), service_prefix=SERVICE)
    HubOAuth.instance(api_url=api, api_token="bench", access_scopes={ACCESS}, oauth_client_id="bench")
    HTTPServer(make_app(collab, SERVICE, "/hub/", os.urandom(32))).listen(port, "127.0.0.1")
    while True:
        state.write_text(json.dumps({"hub_requests": hub.count(), "streams": collab.events.subscribers()}))
        await asyncio.sleep(0.5)


async def open_page(port: int, person: str, query: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /services/visa-collab/api/events{query} HTTP/1.0\r\n"
                 f"Authorization: token t-{person}\r\n\r\n".encode())
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    await reader.readuntil(b"\n\n")  # the first event: the current state
    return reader, writer


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(pages: int, hold: float) -> dict:
    from tests.support import free_port

    port, hub_port = free_port(), free_port()
    state = Path(tempfile.mkdtemp()) / "state.json"
    child = subprocess.Popen([sys.executable, __file__, "--serve", str(pages), str(port), str(hub_port), str(state)],
                             cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not state.exists():
            assert child.poll() is None and time.monotonic() < deadline, "the service did not start"
            await asyncio.sleep(0.1)
        read = lambda: json.loads(state.read_text())  # noqa: E731
        cpu0, t0 = cpu_seconds(child.pid), time.monotonic()
        conns = []
        for first in range(0, pages, 100):  # 100 at a time, as people arrive
            conns += await asyncio.gather(*(open_page(port, f"u{i}", "?server=a" if i % 2 else "")
                                            for i in range(first, min(first + 100, pages))))
        await asyncio.sleep(1.0)  # the state file is written every 0.5 s
        opened, cpu1, t1 = read(), cpu_seconds(child.pid), time.monotonic()
        await asyncio.sleep(hold)
        await asyncio.sleep(1.0)
        held, cpu2 = read(), cpu_seconds(child.pid)
        for _, writer in conns:
            writer.close()
        return {
            "pages": pages, "open_seconds": round(t1 - t0, 2), "open_cpu_seconds": round(cpu1 - cpu0, 2),
            "hub_requests_to_open": opened["hub_requests"], "streams": opened["streams"],
            "idle_seconds": hold, "idle_hub_requests": held["hub_requests"] - opened["hub_requests"],
            "idle_cpu_percent_of_a_core": round(100 * (cpu2 - cpu1) / (hold + 1.0), 2),
        }
    finally:
        child.terminate()
        child.wait(10)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        sys.path.insert(0, str(ROOT))
        asyncio.run(serve(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--hold", type=float, default=120.0, help="seconds the pages stay open, idle")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    print(json.dumps(asyncio.run(measure(args.pages, args.hold)), indent=1))


if __name__ == "__main__":
    main()
