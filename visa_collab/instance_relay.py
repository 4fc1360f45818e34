"""The instances' channel to the collaboration service, relayed by the hub on its own API port.

Why: an instance must reach the service to report who is connected (presence, connection audit)
and to follow its room (owner-away policy, grants changed, pending access requests). The service
listens on 127.0.0.1 of the hub's host, which a sandbox reaches through its bridge but a VM does
not: a qemu guest reaches only the hub's API port (a ``guestfwd`` to 10.0.2.100), an OpenStack
server only ``JupyterHub.hub_connect_url``. Every instance already reaches the hub's API, so the
hub relays the channel there: ``<hub API URL>/visa/collab/api/instances/<owner>/<server>/presence``
(POST) and ``…/room`` (GET, long-poll) go to the same paths under the service's own URL.

Security is the service's, unchanged: the relay forwards the caller's ``Authorization`` header
and nothing else (no cookies, so no cross-site request can use it), and only these two routes;
the service still accepts only a token of the instance's owner with ``access:servers`` on that
very server (`visa_collab.handlers.InstanceChannelHandler`). The relay reads no database and
checks no token itself: it costs the hub's loop one non-blocking HTTP exchange per call.
"""
from __future__ import annotations

import weakref
from typing import Any
from urllib.parse import quote, urlsplit

from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.ioloop import IOLoop

SERVICE = "visa-collab"
#: the relay's path under the hub's API URL (``/hub/api/``); VISA_COLLAB_URL ends with it
RELAY_PATH = "visa/collab/"
#: the longest room long-poll the service holds (``RoomHandler``: 55 s) plus a margin
REQUEST_TIMEOUT = 70.0
#: one open long-poll per running instance: the relay's own client, so they never queue
MAX_OPEN_REQUESTS = 5000
MAX_BODY = 1 << 20  # a presence report is a few kB

_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # one per event loop


def hub_api_url(spawner: Any) -> str:
    """The hub API URL the spawner gives its instance (JupyterHub's ``JUPYTERHUB_API_URL`` rule)."""
    if spawner.hub_connect_url is not None:
        return spawner.hub_connect_url.rstrip("/") + urlsplit(spawner.hub.api_url).path
    return spawner.hub.api_url


def instance_url(spawner: Any) -> str:
    """``VISA_COLLAB_URL`` of one instance: the relay, on the very URL it reaches the hub by, so
    each backend's own rewriting of the hub's URL (qemu's 10.0.2.100, a sandbox's bridge) or
    ``hub_connect_url`` (OpenStack) applies to it too. A callable `Spawner.environment` value."""
    return f"{hub_api_url(spawner).rstrip('/')}/{RELAY_PATH}"


def _http() -> AsyncHTTPClient:
    loop = IOLoop.current()
    if loop not in _clients:
        _clients[loop] = AsyncHTTPClient(force_instance=True, max_clients=MAX_OPEN_REQUESTS)
    return _clients[loop]


class InstanceChannelRelay(web.RequestHandler):
    """``/hub/api/visa/collab/api/instances/<owner>/<server>/(presence|room)`` → the service."""

    def check_xsrf_cookie(self) -> None:
        """Nothing to protect: only the Authorization header is forwarded, never cookies."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """JSON with our plain message; a bug's traceback stays in the hub's log."""
        error = kwargs.get("exc_info", (None, None))[1]
        message = error.log_message if isinstance(error, web.HTTPError) and error.log_message else self._reason
        self.finish({"status": status_code, "message": message})

    async def get(self, owner: str, server: str, channel: str) -> None:
        if channel != "room":
            raise web.HTTPError(405, "Use POST to report presence.")
        await self._relay(owner, server, channel)

    async def post(self, owner: str, server: str, channel: str) -> None:
        if channel != "presence":
            raise web.HTTPError(405, "Use GET to follow the room.")
        if len(self.request.body) > MAX_BODY:
            raise web.HTTPError(413, "Presence report too large.")
        await self._relay(owner, server, channel)

    async def _relay(self, owner: str, server: str, channel: str) -> None:
        auth = self.request.headers.get("Authorization", "")
        if not auth:
            raise web.HTTPError(401, "The instance's channel needs the server's token.")
        service = (self.settings.get("services") or {}).get(SERVICE)
        if service is None or not service.url:
            raise web.HTTPError(503, "The collaboration service is not configured on this hub.")
        target = (f"{service.url.rstrip('/')}{service.prefix}api/instances/"
                  f"{quote(owner, safe='')}/{quote(server, safe='')}/{channel}")
        if self.request.query:
            target += "?" + self.request.query
        headers = {"Authorization": auth, "Accept": "application/json"}
        if self.request.method == "POST":
            headers["Content-Type"] = self.request.headers.get("Content-Type", "application/json")
        request = HTTPRequest(target, self.request.method, headers=headers,
                              body=self.request.body if self.request.method == "POST" else None,
                              request_timeout=REQUEST_TIMEOUT, follow_redirects=False)
        try:
            response = await _http().fetch(request, raise_error=False)
        except (OSError, HTTPClientError):  # no HTTP answer: the service is down, restarting or stuck
            response = None
        if response is None or response.code == 599:
            raise web.HTTPError(502, "The collaboration service is not reachable.")
        self.set_status(response.code)
        self.set_header("Content-Type", response.headers.get("Content-Type", "application/json"))
        self.finish(response.body or b"")


# JupyterHub.extra_handlers (the hub prefixes them with /hub/)
handlers = [
    (rf"/api/{RELAY_PATH}api/instances/([^/]+)/([^/]+)/(presence|room)", InstanceChannelRelay),
]
