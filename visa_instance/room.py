"""The room: who is in this instance right now, with which role, and what they may do.

One :class:`Room` per single-user server. It sees every request (through the gate installed
by :func:`visa_instance.authorizer.install_gate`) and every desktop connection, and from that
knows whether the owner is present. When the owner leaves, the owner-away policy (from the
collaboration service) applies: ``lock`` turns USER members view-only, ``disconnect`` closes
every member's connections except support staff's.

Members' roles come from this server's shares, read from the hub's REST API with the server's
own token (see :mod:`visa_instance.authorizer` for why not from the member's token). They are
read again whenever the collaboration service says the grants changed (long-poll: within a
second or two), when someone with access but no known role arrives, and every
``shares_refresh`` seconds in any case. After each reading, every open connection — desktop,
kernels, terminals, collaboration — is held to its member's new level: closed, made
view-only, or given control back.

Presence and connection events go to the collaboration service (the instance's audit log).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from .authorizer import FULL, NONE, VIEW, level_of, role_of, share_roles_from, signed_in
from .rfb_filter import ClientStream

log = logging.getLogger("visa_instance.room")

DEFAULT_OWNER_AWAY = "lock"
CLOSE_NOT_ALLOWED = 4403  # websocket close code when a member's access ends


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(eq=False)
class Connection:
    """One open websocket of a person (the desktop, or any Lab channel)."""

    model: Mapping[str, Any]
    role: str | None
    channel: str  # desktop | lab
    handler_ref: Callable[[], Any]
    since: str = field(default_factory=_now_iso)
    level: str = FULL
    stream: ClientStream | None = None  # desktop only: the RFB parser of what they send
    dropped_input: int = 0
    closed: bool = False

    @property
    def name(self) -> str:
        return str(self.model.get("name", "?"))

    @property
    def view_only(self) -> bool:
        return self.level != FULL

    def is_open(self) -> bool:
        handler = self.handler_ref()
        if handler is None or self.closed:
            return False
        ws = getattr(handler, "ws_connection", None)
        return ws is not None and not ws.is_closing()

    def close(self, reason: str) -> None:
        handler = self.handler_ref()
        self.closed = True
        if handler is not None and getattr(handler, "ws_connection", None) is not None:
            try:
                handler.close(CLOSE_NOT_ALLOWED, reason[:120])
            except Exception:  # already closing
                pass


async def _fetch_json(url: str, token: str, method: str = "GET", body: Any = None, timeout: float = 10.0) -> Any:
    req = HTTPRequest(
        url, method=method, body=None if body is None else json.dumps(body),
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        request_timeout=timeout, connect_timeout=min(timeout, 10.0),
    )
    resp = await AsyncHTTPClient().fetch(req)
    return json.loads(resp.body) if resp.body else {}


class HubShares:
    """This server's shares, from the hub's REST API, with the server's own token."""

    def __init__(self, api_url: str, owner: str, server: str, token: str) -> None:
        self.url = f"{api_url.rstrip('/')}/shares/{quote(owner, safe='')}/{quote(server, safe='')}"
        self.whoami_url = f"{api_url.rstrip('/')}/user"
        self._token = token

    async def own_token_id(self) -> str:
        """The hub's id of the server's own token (JupyterHub >= 5 reports it in whoami)."""
        return str((await _fetch_json(self.whoami_url, self._token)).get("token_id") or "")

    async def fetch(self) -> list[dict]:
        out: list[dict] = []
        offset = 0
        while True:
            page = await _fetch_json(f"{self.url}?offset={offset}&limit=200", self._token)
            items = page.get("items", []) if isinstance(page, dict) else page
            out += items
            if len(items) < 200:
                return out
            offset += len(items)


class ServiceLink:
    """The collaboration service's instance channel, with the server's own token."""

    def __init__(self, url: str, owner: str, server: str, token: str, timeout: float = 10.0) -> None:
        self.base = f"{url.rstrip('/')}/api/instances/{quote(owner, safe='')}/{quote(server, safe='')}"
        self._token = token
        self.timeout = timeout

    async def report(self, sessions: list[dict], events: list[dict]) -> dict:
        return await _fetch_json(self.base + "/presence", self._token, "POST",
                                 {"sessions": sessions, "events": events}, self.timeout)

    async def wait(self, version: str | None, wait: float) -> dict:
        q = f"?wait={wait:g}" + (f"&version={quote(version)}" if version else "")
        return await _fetch_json(self.base + "/room" + q, self._token, timeout=wait + self.timeout)


class Room:
    def __init__(
        self, owner: str, server: str, *, shares: HubShares | None = None, link: ServiceLink | None = None,
        presence_timeout: float = 60.0, owner_away_grace: float = 10.0, heartbeat: float = 20.0,
        shares_refresh: float = 30.0, clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        self.owner, self.server = owner, server
        self.shares, self.link = shares, link
        self.presence_timeout, self.owner_away_grace = presence_timeout, owner_away_grace
        self.heartbeat, self.shares_refresh = heartbeat, shares_refresh
        self.clock = clock
        self.log = logger or log
        self.owner_away = DEFAULT_OWNER_AWAY
        self.version: str | None = None
        self.pending_requests = 0
        self.share_roles: dict[str, str] = {}
        self._shares_at: float | None = None
        self._own_token_id: str | None = None
        self._shares_lock = asyncio.Lock()
        self.connections: list[Connection] = []
        self.last_request: dict[str, tuple[float, Mapping[str, Any]]] = {}  # name -> (when, model)
        self.lab_present: set[str] = set()
        self._owner_left_at: float | None = None
        self._owner_was_present = False
        self.events: list[dict] = []
        self._report_due = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._warned: dict[str, float] = {}

    @classmethod
    def from_env(cls, hub_auth: Any, collab_url: str, **kw: Any) -> Room:
        owner = os.environ.get("JUPYTERHUB_USER", "")
        server = os.environ.get("JUPYTERHUB_SERVER_NAME", "")
        token = getattr(hub_auth, "api_token", "") if hub_auth is not None else ""
        api_url = getattr(hub_auth, "api_url", "") if hub_auth is not None else ""
        shares = HubShares(api_url, owner, server, token) if token and api_url else None
        link = ServiceLink(collab_url, owner, server, token) if token and collab_url else None
        return cls(owner, server, shares=shares, link=link, **kw)

    # -- roles ----------------------------------------------------------------------------------
    def role(self, model: Mapping[str, Any] | None) -> str | None:
        return role_of(model, self.owner, self.server, self.share_roles)

    async def refresh_shares(self, why: str) -> None:
        if self.shares is None:
            return
        async with self._shares_lock:
            try:
                roles = share_roles_from(await self.shares.fetch(), self.owner, self.server)
            except Exception as e:
                self._warn("shares", f"reading this server's shares from the hub failed ({_why(e)}); "
                                     "keeping the last known roles")
                return
            self._shares_at = self.clock()
            if roles != self.share_roles:
                self.log.info("Member roles now %s (%s)", roles or "{}", why)
                self.share_roles = roles

    async def accepts(self, model: Mapping[str, Any]) -> bool:
        """False for the server's own token: it proves only that the caller runs in (or read
        the environment of) this instance. Until the hub has told us that token's id, no API
        token of the owner is accepted (OAuth tokens of a login session always are)."""
        if model.get("kind", "user") != "user" or model.get("session_id"):
            return True
        if self._own_token_id is None and self.shares is not None:
            try:
                self._own_token_id = await self.shares.own_token_id()
            except Exception as e:
                self._warn("whoami", f"asking the hub for this server's token id failed ({_why(e)})")
                return model.get("name") != self.owner
        own = self._own_token_id
        if own is None:  # outside JupyterHub's REST API (tests, no hub): nothing to compare with
            return True
        return bool(own) and model.get("token_id") != own

    async def know(self, model: Mapping[str, Any]) -> None:
        """Someone the hub let in but whose role we do not know: read the shares again
        (at most every 2 s), so a member granted a moment ago gets in at once."""
        if self.shares is None or model.get("kind", "user") != "user" or model.get("name") == self.owner:
            return
        if self.role(model) is not None:
            return
        if self._shares_at is not None and self.clock() - self._shares_at < 2.0:
            return
        await self.refresh_shares(f"{model.get('name')} arrived")
        self.enforce()

    # -- who is here ----------------------------------------------------------------------------
    def _owner_connected(self) -> bool:
        """Only the owner in person counts: an OAuth token of a hub login session
        (:func:`signed_in`), never an API token such as the server's own."""
        if any(c.name == self.owner and signed_in(c.model) and c.is_open() for c in self.connections):
            return True
        seen = self.last_request.get(self.owner)
        return bool(seen and self.clock() - seen[0] < self.presence_timeout)

    def owner_present(self) -> bool:
        if self._owner_connected():
            return True
        return self._owner_left_at is not None and self.clock() - self._owner_left_at < self.owner_away_grace

    def level(self, role: str | None) -> str:
        return level_of(role, self.owner_present(), self.owner_away)

    def level_for_model(self, model: Mapping[str, Any]) -> str:
        return self.level(self.role(model))

    def observe(self, handler: Any, model: Mapping[str, Any], rel_path: str, level: str) -> None:
        """The gate let a request through: note Lab presence and track Lab websockets."""
        if model.get("kind", "user") != "user":
            return
        name = str(model.get("name", "?"))
        if not rel_path.startswith(("visa/", "desktop/")):
            if signed_in(model):  # presence is people in their browsers, not scripts' tokens
                self.last_request[name] = (self.clock(), model)
            if handler.request.headers.get("Upgrade", "").lower() == "websocket" and level == FULL:
                self.connections.append(Connection(model, self.role(model), "lab", weakref.ref(handler)))
        self.tick()

    def desktop_session(self, handler: Any, model: Mapping[str, Any]) -> Connection | None:
        """A new desktop websocket: its connection record, or None if refused."""
        role = self.role(model)
        level = self.level(role)
        if level == NONE:
            self._event("desktop-refused", str(model.get("name", "?")), role, channel="desktop")
            return None
        return Connection(model, role, "desktop", weakref.ref(handler), level=level, stream=ClientStream())

    def desktop_opened(self, conn: Connection) -> None:
        self.connections.append(conn)
        self._event("connect", conn.name, conn.role, channel="desktop", view_only=conn.view_only)
        self.tick()

    def desktop_closed(self, conn: Connection, reason: str = "closed") -> None:
        conn.closed = True
        if conn in self.connections:
            self.connections.remove(conn)
            extra = {"dropped_input": conn.dropped_input} if conn.dropped_input else {}
            self._event("disconnect", conn.name, conn.role, channel="desktop", reason=reason, **extra)
            if conn.name == self.owner:
                self._owner_left_at = self.clock()
        self.tick()

    def snapshot(self) -> list[dict]:
        """Who is connected now, to the desktop and to Lab."""
        out = [{"user": c.name, "role": c.role or "", "channel": "desktop", "since": c.since,
                "view_only": c.view_only}
               for c in self.connections if c.channel == "desktop" and c.is_open()]
        for name in sorted(self.lab_present):
            seen = self.last_request.get(name)
            model = seen[1] if seen else next((c.model for c in self.connections if c.name == name), {"name": name})
            out.append({"user": name, "role": self.role(model) or "", "channel": "lab", "since": "",
                        "view_only": False})
        return out

    # -- holding everyone to their level ----------------------------------------------------------
    def tick(self) -> None:
        """Recompute presence and levels; close or downgrade what changed. Cheap, idempotent."""
        self.connections = [c for c in self.connections if c.is_open() or (c.channel == "desktop" and not c.closed)]
        now = self.clock()
        lab = {c.name for c in self.connections if c.channel == "lab" and signed_in(c.model) and c.is_open()}
        lab |= {n for n, (t, _m) in self.last_request.items() if now - t < self.presence_timeout}
        for name in sorted(lab - self.lab_present):
            self._event("connect", name, self._role_of_name(name), channel="lab")
        for name in sorted(self.lab_present - lab):
            self._event("disconnect", name, self._role_of_name(name), channel="lab")
            if name == self.owner:
                self._owner_left_at = now
        self.lab_present = lab
        present = self.owner_present()
        if present != self._owner_was_present:
            self._owner_was_present = present
            self._event("owner-back" if present else "owner-away", self.owner, "owner", policy=self.owner_away)
        self.enforce()

    def _role_of_name(self, name: str) -> str | None:
        seen = self.last_request.get(name)
        return self.role(seen[1]) if seen else None

    def enforce(self) -> None:
        for conn in list(self.connections):
            conn.role = self.role(conn.model)
            if conn.role == "owner":
                continue
            level = self.level(conn.role)
            if conn.channel == "desktop":
                if level == NONE:
                    conn.close("your access to this desktop has ended")
                    self.desktop_closed(conn, reason="access ended")
                elif level != conn.level:
                    conn.level = level
                    self._event("view-only" if level == VIEW else "full-control", conn.name, conn.role,
                                channel="desktop")
            elif level != FULL:
                conn.close("your access to JupyterLab has ended")
                self.connections.remove(conn)
                self._event("disconnect", conn.name, conn.role, channel="lab", reason="access ended")
                self.last_request.pop(conn.name, None)

    # -- what the page and the service see ----------------------------------------------------------
    def room_model(self, model: Mapping[str, Any]) -> dict:
        role = self.role(model)
        level = self.level(role)
        out = {"role": role, "level": level, "view_only": level != FULL, "owner": self.owner,
               "owner_present": self.owner_present(), "owner_away": self.owner_away,
               "is_owner": role == "owner"}
        if role == "owner":
            out["pending_requests"] = self.pending_requests
        if role in ("owner", "service", "watcher"):  # a hub service with access (the trainer's grid): who is here
            out["present"] = self.snapshot()
        return out

    def _event(self, event: str, name: str, role: str | None, **detail: Any) -> None:
        self.events.append({"at": _now_iso(), "event": event, "user": name, "role": role or "", **detail})
        if len(self.events) > 1000:
            del self.events[:-1000]
        self._report_due.set()

    # -- background work ----------------------------------------------------------------------------
    def start(self) -> None:
        """The presence clock and share refresh always; the service channel if configured."""
        if self._tasks:
            return
        self._tasks = [asyncio.ensure_future(self._tick_loop())]
        if self.shares is not None:
            self._tasks.append(asyncio.ensure_future(self._shares_loop()))
        if self.link is not None:
            self._tasks += [asyncio.ensure_future(self._follow_service()),
                            asyncio.ensure_future(self._report_loop())]
        self.log.info("Room %s/%s: watching presence%s%s", self.owner, self.server,
                      ", reading member roles from the hub" if self.shares else "",
                      ", reporting to the collaboration service" if self.link else "")

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        self._tasks = []

    def _warn(self, key: str, message: str) -> None:
        """At most one warning a minute per kind of trouble (never a token, never a traceback)."""
        if self.clock() - self._warned.get(key, -1e9) > 60:
            self._warned[key] = self.clock()
            self.log.warning("Room %s/%s: %s", self.owner, self.server, message)

    def _apply_state(self, state: Mapping[str, Any]) -> bool:
        """Apply the service's room state; True if the grants may have changed."""
        policy = state.get("owner_away")
        if policy in ("lock", "disconnect") and policy != self.owner_away:
            self.owner_away = policy
            self._event("policy", self.owner, "owner", policy=policy)
        if "pending_requests" in state:
            self.pending_requests = int(state.get("pending_requests") or 0)
        changed = state.get("version") != self.version
        self.version = state.get("version")
        return changed

    async def _follow_service(self) -> None:
        delay = 1.0
        while True:
            try:
                state = await self.link.wait(self.version, 25)
                delay = 1.0
                if self._apply_state(state):
                    await self.refresh_shares("the collaboration service says grants changed")
                self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._warn("follow", f"following the collaboration service failed ({_why(e)}); retrying")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _report_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._report_due.wait(), self.heartbeat)
            except TimeoutError:
                pass
            self._report_due.clear()
            events, self.events = self.events, []
            try:
                state = await self.link.report(self.snapshot(), events)
                if self._apply_state(state):
                    await self.refresh_shares("the collaboration service says grants changed")
                    self.tick()
            except asyncio.CancelledError:
                self.events[:0] = events
                raise
            except Exception as e:
                self.events[:0] = events  # kept for the next attempt
                self._warn("report", f"reporting presence failed ({_why(e)}); retrying")
                await asyncio.sleep(2)
                self._report_due.set()

    async def _shares_loop(self) -> None:
        while True:
            await self.refresh_shares("periodic check")
            self.tick()
            await asyncio.sleep(self.shares_refresh)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                self.tick()
            except Exception:
                self.log.exception("Room check failed")


def _why(e: Exception) -> str:
    return f"HTTP {e.code}" if isinstance(e, HTTPClientError) else type(e).__name__
