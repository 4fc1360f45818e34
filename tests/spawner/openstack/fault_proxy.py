"""A small fault-injecting HTTP proxy between openstacksdk and the lab's real endpoints.

One listener per upstream service. Faults (each a probability, changeable at run time):
5xx answers *before* the request reaches the service, 5xx answers *after* it did (the request
took effect but the client never hears so: the hard case for creation), added latency, and
hangs longer than the client's timeout. Response bodies (token catalogues, version documents)
have the upstream host:port rewritten to the proxy's, so every later call goes through it too.
"""
from __future__ import annotations

import asyncio
import random
import socket
import threading
from dataclasses import dataclass

from tornado import httpclient, httpserver, web


@dataclass
class Faults:
    error_before: float = 0.0   # 502/503 without forwarding
    error_after: float = 0.0    # forward, then answer 502 instead of the real answer
    latency: float = 0.0        # probability of an added delay
    latency_s: float = 0.5
    hang: float = 0.0           # probability of holding the request for hang_s, then closing
    hang_s: float = 40.0
    only_methods: tuple = ()    # e.g. ("POST",): faults only on these methods; () = all

    def off(self) -> None:
        self.error_before = self.error_after = self.latency = self.hang = 0.0


class _Handler(web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD")

    def initialize(self, proxy: FaultProxy, upstream: str) -> None:
        self.proxy, self.upstream = proxy, upstream

    def compute_etag(self):
        return None

    async def _any(self) -> None:
        f, rnd = self.proxy.faults, self.proxy.random
        faulty = not f.only_methods or self.request.method in f.only_methods
        if faulty and rnd.random() < f.latency:
            await asyncio.sleep(f.latency_s)
        if faulty and rnd.random() < f.hang:
            self.proxy.count("hang")
            await asyncio.sleep(f.hang_s)
            self.request.connection.close()
            return
        if faulty and rnd.random() < f.error_before:
            self.proxy.count("error_before")
            return self._fail(503)
        headers = {k: v for k, v in self.request.headers.get_all() if k.lower() not in ("host", "content-length")}
        body = self.request.body if self.request.method in ("POST", "PUT", "PATCH") else None
        resp = await self.proxy.client.fetch(httpclient.HTTPRequest(
            self.upstream + self.request.uri, method=self.request.method, headers=headers, body=body,
            allow_nonstandard_methods=True, follow_redirects=False, decompress_response=False,
            request_timeout=120), raise_error=False)
        if faulty and rnd.random() < f.error_after:
            self.proxy.count("error_after")
            return self._fail(502)
        self.set_status(resp.code if resp.code != 599 else 502, resp.reason)
        for k, v in resp.headers.get_all():
            if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                self.set_header(k, self.proxy.rewrite_text(v))
        if resp.body:
            self.write(self.proxy.rewrite(resp.body))
        self.proxy.count("forwarded")

    def _fail(self, code: int) -> None:
        self.set_status(code)
        self.set_header("Content-Type", "application/json")
        self.write(b'{"message": "injected fault", "code": %d}' % code)

    get = post = put = delete = patch = head = _any


class FaultProxy:
    """upstreams: {name: "http://127.0.0.1:5000"} → proxy URLs in `self.urls[name]`."""

    def __init__(self, upstreams: dict[str, str], seed: int = 4) -> None:
        self.upstreams, self.faults, self.random = upstreams, Faults(), random.Random(seed)
        self.urls: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True, name="fault-proxy")

    def count(self, what: str) -> None:
        with self._lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def rewrite_text(self, text: str) -> str:
        for name, up in self.upstreams.items():
            text = text.replace(up, self.urls[name])
        return text

    def rewrite(self, body: bytes) -> bytes:
        for name, up in self.upstreams.items():
            body = body.replace(up.encode(), self.urls[name].encode())
        return body

    def start(self) -> FaultProxy:
        self._thread.start()
        assert self._ready.wait(10), "fault proxy did not start"
        return self

    def _main(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self.client = httpclient.AsyncHTTPClient(max_clients=200)
        for name, upstream in self.upstreams.items():
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sock.listen(256)
            sock.setblocking(False)
            self.urls[name] = f"http://127.0.0.1:{sock.getsockname()[1]}"
            app = web.Application([(r".*", _Handler, {"proxy": self, "upstream": upstream})])
            server = httpserver.HTTPServer(app, idle_connection_timeout=60)
            server.add_sockets([sock])
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        if self._loop:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
