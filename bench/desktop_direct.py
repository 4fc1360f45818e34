"""The direct path of bench/desktop.py: the desktop page and a websocket↔unix-socket bridge to
Xvnc, with nothing of the hub in between (like websockify), run as its own process.

    python bench/desktop_direct.py RFB_SOCKET PORT PAGE_FILE
"""
from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def serve_direct(rfb_socket: str, port: int, page_file: str) -> None:
    """A websockify-like bridge: the page, its scripts, and ``/desktop/`` ↔ Xvnc's unix socket."""
    import tornado.web
    import tornado.websocket

    page = Path(page_file).read_text()

    class Page(tornado.web.RequestHandler):
        def get(self) -> None:
            self.finish(page)

    class Relay(asyncio.Protocol):
        """Xvnc → page as jupyter-server-proxy's raw bridge does it (each read is one message, not
        awaited), so the two paths differ only by CHP and the hub's handler."""

        def __init__(self, handler: tornado.websocket.WebSocketHandler) -> None:
            self.handler = handler

        def data_received(self, data: bytes) -> None:
            self.handler.write_message(data, binary=True)

        def connection_lost(self, exc: Exception | None) -> None:
            self.handler.close()

    class Bridge(tornado.websocket.WebSocketHandler):
        async def open(self) -> None:
            loop = asyncio.get_running_loop()
            self.transport, _ = await loop.create_unix_connection(lambda: Relay(self), rfb_socket)
            self.set_nodelay(True)

        def on_message(self, message: bytes) -> None:
            self.transport.write(message)

        def on_close(self) -> None:
            self.transport.close()

    app = tornado.web.Application([
        (r"/", Page),
        (r"/desktop/?", Bridge),
        (r"/visa/static/(.*)", tornado.web.StaticFileHandler, {"path": str(REPO / "visa_instance" / "static")}),
        (r"/visa/novnc/(.*)", tornado.web.StaticFileHandler, {"path": "/usr/share/novnc"}),
    ], websocket_max_message_size=2**26)

    async def main() -> None:
        app.listen(port, "127.0.0.1")
        await asyncio.Event().wait()

    asyncio.run(main())


def local_page(html: str, prefix: str) -> str:
    """The hub's desktop page with its URLs under ``prefix`` made local, and no room/ops/collab."""
    html = html.replace(prefix, "/")
    match = re.search(r'(<script id="visa-desktop-config" type="application/json">)(.*?)(</script>)', html, re.S)
    config = json.loads(match.group(2))
    for key in ("roomPath", "opsBanner", "collabPrompt"):
        config.pop(key, None)
    return html[:match.start(2)] + json.dumps(config) + html[match.end(2):]


if __name__ == "__main__":
    serve_direct(sys.argv[1], int(sys.argv[2]), sys.argv[3])
