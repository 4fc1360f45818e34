"""The few JupyterHub REST API calls the collaboration service makes, with its own token.

Every call has a timeout; reads are retried with a short backoff (the hub may be restarting),
writes are not (a share grant is idempotent in the hub, but a half-seen error is reported
rather than guessed about). Tokens are never logged.

Reads may be answered from a short-lived cache (``max_age``): pages that are open for hours
must not cost the hub a request each time they are drawn or reconnect. Only callers that
merely *show* something ask for it; decisions read fresh (the default), and a fresh read
refreshes the cache. The service's own writes forget what they change, a user whose server
is starting or stopping is never cached, and `fresh()` makes a whole task (the periodic
reconciliation) read fresh.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

log = logging.getLogger("visa_collab.hub")
# set by `HubAPI.fresh()`: every read in this context goes to the hub
_fresh: ContextVar[bool] = ContextVar("visa_collab_hub_fresh", default=False)


class HubError(Exception):
    """The hub refused or failed a call; `status` is its HTTP status (599: no answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


def _q(name: str) -> str:
    return quote(name, safe="")


class HubAPI:
    def __init__(self, api_url: str, token: str, timeout: float = 10.0, retries: int = 3,
                 cache_ttl: float = 30.0, monotonic: Callable[[], float] = time.monotonic,
                 page_size: int = 200) -> None:
        self.api_url = api_url.rstrip("/")
        self._token = token
        self.timeout, self.retries = timeout, retries
        # the longest a cached answer is used by callers that accept one (`max_age`)
        self.cache_ttl = cache_ttl
        self.page_size = page_size  # items per request of a paged listing (the hub's default maximum)
        self.monotonic = monotonic
        self._cache: dict[str, tuple[float, str]] = {}  # path → (when read, JSON text)
        self._inflight: dict[str, asyncio.Future] = {}  # path → the read under way (one at a time)
        self.requests = 0  # calls that reached the hub (tests, metrics)
        self._writes = 0  # a read that overlapped one of our writes is not cached

    @contextmanager
    def fresh(self) -> Iterator[None]:
        """Within this block (and tasks started in it) every read asks the hub."""
        token = _fresh.set(True)
        try:
            yield
        finally:
            _fresh.reset(token)

    def forget(self, owner: str) -> None:
        """Drop what is cached about `owner` and their servers' shares (after we changed them)."""
        prefixes = (f"/users/{_q(owner)}?", f"/shares/{_q(owner)}/")
        self._writes += 1
        for path in [p for p in self._cache if p.startswith(prefixes)]:
            del self._cache[path]

    async def _read(self, path: str, max_age: float, ok404: bool = False) -> Any:
        """GET `path`, from the cache if an answer younger than `max_age` s is there.

        Concurrent reads of one path share one request: a burst of pages reconnecting after
        a restart costs the hub one request per person, not one per page.
        """
        max_age = 0.0 if _fresh.get() else min(max_age, self.cache_ttl)
        hit = self._cache.get(path)
        if max_age > 0 and hit is not None and self.monotonic() - hit[0] < max_age:
            return json.loads(hit[1])
        shared = self._inflight.get(path) if max_age > 0 else None
        if shared is not None:
            try:
                return json.loads(await asyncio.shield(shared))
            except asyncio.CancelledError:
                if not shared.cancelled():
                    raise  # this caller was cancelled, not the read it waited on
        writes = self._writes
        future: asyncio.Future | None = None
        if path not in self._inflight:
            future = self._inflight[path] = asyncio.get_running_loop().create_future()
        try:
            value = await self._call("GET", path, ok404=ok404)
        except BaseException as e:
            if future is not None:
                if isinstance(e, Exception):
                    future.set_exception(e)
                    future.exception()  # mark it retrieved: maybe nobody else waited
                else:
                    future.cancel()
            raise
        finally:
            if future is not None and self._inflight.get(path) is future:
                del self._inflight[path]
        text = json.dumps(value)
        if future is not None:
            future.set_result(text)
        if writes == self._writes and _cacheable(value):
            if len(self._cache) >= 4096:  # one entry per person looked up: drop the expired ones
                self._cache = {p: v for p, v in self._cache.items() if self.monotonic() - v[0] < self.cache_ttl}
            self._cache[path] = (self.monotonic(), text)
        else:
            self._cache.pop(path, None)
        return value

    async def _call(self, method: str, path: str, body: Any = None, ok404: bool = False,
                    timeout: float | None = None) -> Any:
        attempts = self.retries if method == "GET" else 1
        delay = 0.2
        for attempt in range(1, attempts + 1):
            req = HTTPRequest(
                f"{self.api_url}{path}", method=method,
                headers={"Authorization": f"token {self._token}", "Content-Type": "application/json"},
                body=None if body is None else json.dumps(body),
                allow_nonstandard_methods=True, request_timeout=timeout or self.timeout,
                connect_timeout=self.timeout,
            )
            try:
                self.requests += 1
                resp = await AsyncHTTPClient().fetch(req)
            except HTTPClientError as e:
                if e.code == 404 and ok404:
                    return None
                if e.code == 599 and attempt < attempts:
                    await asyncio.sleep(delay)
                    delay *= 2
                    continue
                message = ""
                if e.response is not None and e.response.body:
                    try:
                        message = json.loads(e.response.body).get("message", "")
                    except (ValueError, AttributeError):
                        message = e.response.body[:200].decode("utf8", "replace")
                raise HubError(e.code, message or str(e)) from None
            except OSError as e:
                if attempt < attempts:
                    await asyncio.sleep(delay)
                    delay *= 2
                    continue
                raise HubError(599, f"hub unreachable: {e}") from None
            if not resp.body:
                return {}
            return json.loads(resp.body)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- reads ------------------------------------------------------------------------------
    async def user(self, name: str, max_age: float = 0.0) -> dict | None:
        """The hub's model of `name` with all their servers (None: no such user)."""
        return await self._read(f"/users/{_q(name)}?include_stopped_servers=1", max_age, ok404=True)

    async def group(self, name: str, max_age: float = 0.0) -> dict | None:
        return await self._read(f"/groups/{_q(name)}", max_age, ok404=True)

    async def _pages(self, path: str, ok404: bool = False) -> list[dict]:
        """Every item of a paged listing, `page_size` a request, always read fresh.

        The hub answers a plain list (users) or ``{"items", "_pagination"}`` (shares); for the
        latter its ``next`` decides, not the page's length: expired shares are dropped *after*
        paging, so a short page need not be the last. A 404 (no such user) is an empty list.
        """
        out: list[dict] = []
        offset, size = 0, self.page_size
        sep = "&" if "?" in path else "?"
        while True:
            page = await self._call("GET", f"{path}{sep}offset={offset}&limit={size}", ok404=ok404)
            if page is None:
                return out
            if isinstance(page, dict):
                out.extend(page.get("items") or [])
                following = (page.get("_pagination") or {}).get("next")
                if not following:
                    return out
                offset = int(following["offset"])
                continue
            out.extend(page)
            if len(page) < size:
                return out
            offset += len(page)

    async def users(self) -> list[dict]:
        """Every person, with all their servers and groups."""
        return await self._pages("/users?include_stopped_servers=1")

    async def shared_with(self, member: str) -> list[dict]:
        """Every share `member` holds (theirs and their groups'), on anyone's servers."""
        return await self._pages(f"/users/{_q(member)}/shared", ok404=True)

    async def owner_shares(self, owner: str) -> list[dict]:
        """Every share on any of `owner`'s servers."""
        return await self._pages(f"/shares/{_q(owner)}", ok404=True)

    async def shares(self, owner: str, server: str, max_age: float = 0.0) -> list[dict]:
        model = await self._read(f"/shares/{_q(owner)}/{_q(server)}", max_age, ok404=True)
        if model is None:
            return []
        return model.get("items", model) if isinstance(model, dict) else model

    # -- writes -----------------------------------------------------------------------------
    async def _write(self, owner: str, method: str, path: str, body: Any) -> Any:
        """A change to `owner`'s servers or shares: what we had cached about them is stale."""
        try:
            return await self._call(method, path, body)
        finally:
            self.forget(owner)

    async def grant(self, owner: str, server: str, member: str, scopes: list[str]) -> dict:
        return await self._write(owner, "POST", f"/shares/{_q(owner)}/{_q(server)}",
                                 {"user": member, "scopes": scopes})

    async def revoke(self, owner: str, server: str, member: str, scopes: list[str] | None = None) -> dict:
        body: dict[str, Any] = {"user": member}
        if scopes is not None:
            body["scopes"] = scopes
        return await self._write(owner, "PATCH", f"/shares/{_q(owner)}/{_q(server)}", body)

    async def stop_server(self, owner: str, server: str) -> dict:
        """Stop (not delete) a named server; the hub answers before it has stopped (202)."""
        return await self._write(owner, "DELETE", f"/users/{_q(owner)}/servers/{_q(server)}", {"remove": False})

    async def start_server(self, owner: str, server: str, user_options: dict) -> dict:
        return await self._write(owner, "POST", f"/users/{_q(owner)}/servers/{_q(server)}",
                                 {"user_options": user_options})


def _cacheable(value: Any) -> bool:
    """Not a user with a server starting or stopping: who waits on that needs every change."""
    servers = value.get("servers") if isinstance(value, dict) else None
    return not (isinstance(servers, dict) and any(isinstance(s, dict) and s.get("pending")
                                                  for s in servers.values()))
