"""``GET api/events``: server-sent events for the service's open pages, instead of polling.

Three kinds of stream, all for the signed-in person only:

* ``?server=S``: the pending access requests on the caller's instance S (the prompt on the
  owner's desktop page, the Members page). The open stream is also the owner's presence:
  support staff must ask while it is open and for `owner_page_ttl` after it closes.
* no argument: the pending requests on all the caller's instances (the hub's home page).
* ``?request=ID``: one access request the caller made, until it is answered or expires.

Events: ``pending`` (a JSON list of request models, sent first and on every change) or
``request`` (one request model). A comment line every `keepalive` seconds keeps proxies from
closing an idle stream and tells the service that the page is still there; the browser's
`EventSource` reconnects by itself (after ``retry`` ms) and gets a fresh first event.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from tornado import web
from tornado.iostream import StreamClosedError

from .collab_types import _parse_time
from .events import EventBus, Subscription
from .handlers import ApiHandler, my_server_names, row_id

# the longest a stream stays silent: proxies close idle connections after a minute or so
DEFAULT_KEEPALIVE = 30.0
RETRY_MS = 3000


async def off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a database read without blocking the event loop (awaited if it is already async)."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def concerns_owner(notice: dict, owner: str, server: str) -> bool:
    """A request notice about `owner`'s instance `server` (any of theirs if `server` is empty)."""
    return notice["type"] == "request" and notice["owner"] == owner and (not server or notice["server"] == server)


class EventsHandler(ApiHandler):
    _sub: Subscription | None = None

    @property
    def events(self) -> EventBus:
        return self.collab.events

    @property
    def keepalive(self) -> float:
        """Often enough to keep proxies quiet and the owner present (a third of the TTL)."""
        return min(self.settings.get("events_keepalive", DEFAULT_KEEPALIVE), self.collab.owner_page_ttl / 3)

    @web.authenticated
    async def get(self) -> None:
        actor = self.actor
        server = self.get_argument("server", "")
        request_arg = self.get_argument("request", "")
        if request_arg:
            if not request_arg.isdigit():
                raise web.HTTPError(400, "request must be a request id.")
            request_id = row_id(request_arg, "No such access request.")
            await self.guard(self.collab.request_status(actor, request_id))  # the caller's own, or 404
        self.set_header("Content-Type", "text/event-stream; charset=UTF-8")
        self.set_header("X-Accel-Buffering", "no")  # nginx in front: do not hold events back
        with self.events.subscribe(actor) as sub:
            self._sub = sub
            try:
                if request_arg:
                    await self._follow_request(sub, request_id)
                else:
                    await self._follow_pending(sub, actor, server)
            except StreamClosedError:
                pass
            finally:
                self._sub = None
                if server:
                    self.collab.owner_polled(actor, server)  # the TTL runs from the page's last moment

    def on_connection_close(self) -> None:
        if self._sub is not None:
            self._sub.close()

    async def _write(self, text: str) -> None:
        self.write(text)
        await self.flush()

    async def _send(self, event: str, data: Any, first: bool = False) -> None:
        retry = f"retry: {RETRY_MS}\n" if first else ""  # how long the browser waits to reconnect
        await self._write(f"{retry}event: {event}\ndata: {json.dumps(data)}\n\n")

    async def _next(self, sub: Subscription) -> dict | None:
        """The next notice, or None after `keepalive` s of silence (a keep-alive comment is sent)."""
        try:
            return await asyncio.wait_for(sub.queue.get(), self.keepalive)
        except TimeoutError:
            await self._write(": keep-alive\n\n")
            return None

    async def _follow_pending(self, sub: Subscription, actor: str, server: str) -> None:
        pending = await self._pending_now(actor, server)
        await self._send("pending", sorted(pending.values(), key=lambda r: r["id"]), first=True)
        while not sub.closed:
            if server:
                self.collab.owner_polled(actor, server)
            notice = await self._next(sub)
            if sub.closed:
                return
            if notice is None:
                continue
            if notice["type"] == "resync":
                changed = await self._pending_now(actor, server)
            elif concerns_owner(notice, actor, server):
                changed = dict(pending)
                model = await off_loop(self.collab.request, notice["id"])
                if model["status"] == "pending":
                    changed[model["id"]] = model
                else:
                    changed.pop(model["id"], None)
            else:
                continue
            if changed != pending:
                pending = changed
                await self._send("pending", sorted(pending.values(), key=lambda r: r["id"]))

    async def _pending_now(self, actor: str, server: str) -> dict[int, dict]:
        """The pending requests on the caller's instance(s), each with its expiry announced."""
        names = [server] if server else await self.guard(my_server_names(self.collab, actor))
        out: dict[int, dict] = {}
        for name in names:
            for r in await off_loop(self.collab.requests_for, actor, name, "pending"):
                out[r["id"]] = r
                self._announce_expiry(r)
        return out

    def _announce_expiry(self, r: dict) -> None:
        created = _parse_time(r["created_at"])
        if created is not None:
            left = (created + timedelta(seconds=self.collab.request_ttl) - self.collab.now()).total_seconds()
            self.events.expire_later(r["id"], r["owner"], r["server"], r["requester"], left)

    async def _follow_request(self, sub: Subscription, request_id: int) -> None:
        model = await off_loop(self.collab.request, request_id)
        await self._send("request", model, first=True)
        if model["status"] == "pending":
            self._announce_expiry(model)
        while not sub.closed and model["status"] == "pending":
            notice = await self._next(sub)
            if sub.closed:
                return
            if notice is None or (notice["type"] == "request" and notice["id"] != request_id):
                continue
            model = await off_loop(self.collab.request, request_id)
            if model["status"] != "pending":
                await self._send("request", model)


def push_handlers(prefix: str) -> list[tuple]:
    """The stream's route, beside `handlers.make_handlers` (this module builds on that one)."""
    return [(f"{prefix}api/events", EventsHandler)]
