"""The trainer's grid of every participant's live desktop (issue 19); routes mounted by the service app.

``courses/<id>/grid`` (trainers of that course and administrators; others 403) shows a tile per
participant: a thumbnail of their desktop refreshed every few seconds, who is connected, the last
real activity the hub heard of, and four actions:

* **Watch**: a link to the participant's desktop page; the trainer is a GUEST member there ("Start
  the class" shares each instance with the trainers), so the instance drops their input.
* **Help**: the trainer's role changed to SUPPORT through the collaboration service (which lets this
  service do that for a course's trainers, `TrainingHub.collab_call`, the way the class start shares
  instances), and back to GUEST when done;
  the participant's pages say "<trainer> is helping" (the instance's room names members present).
* **Broadcast**: a message kept by this service per course (in its database: a restart keeps it;
  it expires at the course end, or after the minutes the trainer gave); every course instance's Lab and
  desktop page show it as a banner (`visa_instance.broadcast` polls ``api/courses/<id>/broadcast``
  from the browser, same origin through the hub's proxy, as the desktop page already embeds
  visa-ops' banner). No new relay from the instance: the browser, not the instance, reaches the
  service, which works for every backend (a VM reaches only the hub's API).
* **Reset**: the hub API ``POST /hub/api/visa/instances/<owner>/<server>/reset`` (`visa_spawner.reset`).

Thumbnails and presence are read by this service from each instance (``visa/desktop/snapshot.png``,
``visa/api/room``) through the hub's proxy with the service's own token, and served to the trainer
from here: the trainer's browser would meet the hub's OAuth consent page once per participant's
instance (a shared server is not the trainer's own), which an ``<img>`` cannot click through.

Settings (the service app's tornado settings, or `grid_routes` keyword arguments): ``training``
(`visa_training.training.Training`), ``service_prefix``, ``hub_prefix``; ``proxy_url`` — the hub's
public URL as the service reaches it (default ``$VISA_TRAINING_PROXY_URL``); ``api_token`` — the
service's token (default ``$JUPYTERHUB_API_TOKEN``), which needs ``access:servers`` (thumbnails,
presence) and ``admin:servers`` (reset) besides the service's other scopes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from visa_collab.hubapi import HubError

from .handlers import COURSE, BaseHandler

log = logging.getLogger("visa_training")
MAX_BROADCAST = 500  # characters
MAX_BROADCAST_MINUTES = 24 * 60
INSTANCE_TIMEOUT = 5.0
HUB_CACHE_SECONDS = 2.0
USER = r"([^/]{1,128})"


def _q(name: str) -> str:
    return quote(name, safe="")


@dataclass
class Grid:
    """What the grid's handlers share: how to reach instances."""

    proxy_url: str
    api_token: str

    def instance_request(self, server_url: str, path: str) -> HTTPRequest:
        return HTTPRequest(f"{self.proxy_url.rstrip('/')}{server_url}{path}",
                           headers={"Authorization": f"token {self.api_token}"}, follow_redirects=False,
                           request_timeout=INSTANCE_TIMEOUT, connect_timeout=INSTANCE_TIMEOUT)

    async def instance_get(self, server_url: str, path: str) -> tuple[int, bytes, str]:
        """(status, body, content type) of a GET in an instance; 599 when it does not answer."""
        try:
            resp = await AsyncHTTPClient().fetch(self.instance_request(server_url, path), raise_error=False)
        except (OSError, HTTPClientError):
            return 599, b"", ""
        return resp.code, resp.body or b"", resp.headers.get("Content-Type", "")


def proxy_url(bind_url: str = "", ip: str = "", port: int = 0, base_url: str = "/") -> str:
    """The hub's public URL as a service on the hub's host reaches it (``VISA_TRAINING_PROXY_URL``),
    from ``JupyterHub.bind_url`` or ``ip``/``port`` (JupyterHub's rule: port wins over bind_url);
    an all-interfaces address becomes 127.0.0.1. No trailing slash, no base URL (server URLs have it)."""
    parsed = urlsplit(bind_url or "http://:8000")
    host = ip or parsed.hostname or ""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{parsed.scheme or 'http'}://{host}:{port or parsed.port or 8000}"


def server_state(server: dict | None) -> str:
    """running | starting | stopping | stopped | none (no instance yet)."""
    if not server:
        return "none"
    if server.get("pending") == "spawn":
        return "starting"
    if server.get("pending") == "stop":
        return "stopping"
    return "running" if server.get("ready") else "stopped"


def presence_of(room: dict) -> list[dict]:
    """Who is connected, from the instance's room (the owner's view, which a service also gets)."""
    out = []
    for p in room.get("present") or []:
        if isinstance(p, dict) and p.get("user"):
            out.append({"user": str(p["user"]), "role": str(p.get("role") or ""),
                        "channel": str(p.get("channel") or ""), "view_only": bool(p.get("view_only"))})
    return out


class GridHandler(BaseHandler):
    def initialize(self, grid: Grid) -> None:
        self.grid = grid

    async def participant(self, course_id: str, user: str) -> tuple[Any, dict]:
        """The course (trainers and admins only) and the participant's hub server (404 if none)."""
        course = await self.course(course_id)
        if await self.training.store.participant(course.id, user) is None:
            raise web.HTTPError(404, f"{user[:60]} is not a participant of this course.")
        model = await self.guard(self.training.hub.user(user, max_age=HUB_CACHE_SECONDS)) or {}
        server = (model.get("servers") or {}).get(course.server_name)
        if not server:
            raise web.HTTPError(404, f"{user[:60]} has no instance for this course yet.")
        return course, server


class GridPage(GridHandler):
    @web.authenticated
    async def get(self, course_id: str) -> None:
        course = await self.course(course_id)
        self.render("grid.html", course=course, broadcast=await self.training.store.broadcast(course.id))


class GridApi(GridHandler):
    """GET api/courses/<id>/grid: a tile per participant (state, activity, who is connected)."""

    api = True

    @web.authenticated
    async def get(self, course_id: str) -> None:
        course = await self.course(course_id)
        people = await self.training.store.participants(course.id)
        tiles = await asyncio.gather(*(self._tile(course, p) for p in people))
        message = await self.training.store.broadcast(course.id)
        self.send({"course": course.id, "tiles": list(tiles), "broadcast": message})

    async def _tile(self, course: Any, person: dict) -> dict:
        user = person["user"]
        try:
            model = await self.training.hub.user(user, max_age=HUB_CACHE_SECONDS) or {}
        except HubError:
            model = {}
        server = (model.get("servers") or {}).get(course.server_name)
        state = server_state(server)
        tile = {"user": user, "display_name": person.get("display_name") or user, "state": state,
                "last_activity": (server or {}).get("last_activity"), "present": [], "desktop_url": "",
                "snapshot_url": f"{self.prefix}courses/{course.id}/grid/{_q(user)}/snapshot.png"}
        if state == "running":
            if person.get("state") != "ready":
                await self._share_late_joiner(course, user)
            tile["desktop_url"] = f"{server['url']}visa/desktop"
            status, body, _ = await self.grid.instance_get(server["url"], "visa/api/room")
            if status == 200:
                try:
                    tile["present"] = presence_of(json.loads(body))
                except ValueError:
                    pass
        return tile

    async def _share_late_joiner(self, course: Any, user: str) -> None:
        """A running instance "Start the class" did not share (a guest who joined by a seat link
        later): shared with the trainers now, so Watch and Help work on its tile too. Marked ready
        once shared; a refusal is tried again at the next refresh."""
        if not await self.training.share_with_trainers(course, user):
            await self.training.store.set_progress(course.id, user, "ready", "Ready, shared with the trainers")


class SnapshotProxy(GridHandler):
    """GET courses/<id>/grid/<user>/snapshot.png?w=: the participant's desktop, read with the service's token."""

    @web.authenticated
    async def get(self, course_id: str, user: str) -> None:
        _course, server = await self.participant(course_id, user)
        if not server.get("ready"):
            raise web.HTTPError(404, "This instance is not running.")
        width = self.get_argument("w", "320")
        status, body, kind = await self.grid.instance_get(server["url"], f"visa/desktop/snapshot.png?w={_q(width)}")
        if status == 200 and kind.startswith("image/png"):
            self.set_header("Content-Type", "image/png")
            self.finish(body)
            return
        if status in (400, 404):  # the instance's own message (no desktop yet, bad width)
            try:
                message = str(json.loads(body).get("message") or "")
            except (ValueError, AttributeError):
                message = ""
            raise web.HTTPError(status, "%s", message or "No picture of this desktop.")
        log.warning("Snapshot of %s/%s: the instance answered %s", user, server.get("name"), status)
        raise web.HTTPError(502, "The instance did not answer with a picture.")


class HelpApi(GridHandler):
    """POST api/courses/<id>/grid/<user>/help ``{"on": true|false}``: the trainer becomes SUPPORT
    (takes control; the participant's pages say who is helping), or GUEST again."""

    api = True

    @web.authenticated
    async def post(self, course_id: str, user: str) -> None:
        course, server = await self.participant(course_id, user)
        on = self.body().get("on", True)
        if not isinstance(on, bool):
            raise web.HTTPError(400, "on must be true or false.")
        trainer = self.actor
        if trainer == user:
            raise web.HTTPError(400, "This is your own instance.")
        role = "support" if on else "guest"
        url = (f"{self.training.collab_url}/api/instances/{_q(user)}/{_q(course.server_name)}/members/"
               f"{_q(trainer)}")
        try:
            await self.training.hub.collab_call("PATCH", url, {"role": role})
        except HubError as e:
            raise web.HTTPError(e.status if 400 <= e.status < 500 else 502, "%s", refusal_message(e)) from None
        log.info("%s %s %s/%s (course %s)", trainer, "helps" if on else "stops helping", user,
                      course.server_name, course.id)
        self.send({"user": user, "role": role, "url": server["url"] + ("lab" if on else "visa/desktop")})


def refusal_message(error: HubError) -> str:
    """The refusing service's own words (its JSON ``message``, or its text), else a plain one."""
    try:
        message = json.loads(error.message).get("message")
    except (ValueError, AttributeError):
        message = error.message
    return str(message or "The request was refused: nothing was changed.")[:300]


class BroadcastApi(GridHandler):
    """GET api/courses/<id>/broadcast: the message (participants, trainers, admins);
    POST ``{"text": "...", "minutes": n}``: set it (trainers, admins) until the course end or for
    `minutes` (optional, 1..MAX_BROADCAST_MINUTES); empty text clears it."""

    api = True

    @web.authenticated
    async def get(self, course_id: str) -> None:
        course = await self.training.store.course(course_id)
        if course is None:
            raise web.HTTPError(404, "No such course.")
        actor = self.actor
        if not (actor in course.trainers or self.is_admin()
                or await self.training.store.participant(course.id, actor) is not None):
            raise web.HTTPError(403, "Only the course's participants and trainers see its messages.")
        self.send({"broadcast": await self.training.store.broadcast(course.id)})

    @web.authenticated
    async def post(self, course_id: str) -> None:
        course = await self.course(course_id)
        body = self.body()
        text = body.get("text", "")
        if not isinstance(text, str):
            raise web.HTTPError(400, "text must be a string.")
        text = " ".join(text.split())
        if len(text) > MAX_BROADCAST:
            raise web.HTTPError(400, f"A message has at most {MAX_BROADCAST} characters.")
        minutes = body.get("minutes")
        if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, int)
                                    or not 1 <= minutes <= MAX_BROADCAST_MINUTES):
            raise web.HTTPError(400, f"minutes must be a whole number from 1 to {MAX_BROADCAST_MINUTES}.")
        expires = course.ends_at
        if minutes is not None:
            expires = min(expires, self.training.store.clock() + timedelta(minutes=minutes))
        message = await self.training.store.set_broadcast(course.id, text, self.actor, expires)
        log.info("Broadcast to %s by %s: %s", course.id, self.actor, "set" if message else "cleared")
        self.send({"broadcast": message})


class ResetApi(GridHandler):
    """POST api/courses/<id>/grid/<user>/reset: the instance back to the course's materials."""

    api = True

    @web.authenticated
    async def post(self, course_id: str, user: str) -> None:
        course, _server = await self.participant(course_id, user)
        try:
            result = await self.training.hub._call(
                "POST", f"/visa/instances/{_q(user)}/{_q(course.server_name)}/reset", {}, timeout=120)
        except HubError as e:
            raise web.HTTPError(e.status if 400 <= e.status < 500 else 502, "%s", refusal_message(e)) from None
        log.info("%s reset %s/%s (course %s)", self.actor, user, course.server_name, course.id)
        self.training.hub.forget(user)
        self.send(result or {"owner": user, "server": course.server_name})


def grid_routes(prefix: str, **settings: Any) -> list[tuple]:
    """Tornado routes of the grid pages and actions under the service's `prefix`."""
    grid = Grid(proxy_url=str(settings.get("proxy_url") or os.environ.get("VISA_TRAINING_PROXY_URL", "")),
                api_token=str(settings.get("api_token") or os.environ.get("JUPYTERHUB_API_TOKEN", "")))
    p, kw = prefix, {"grid": grid}
    return [
        (f"{p}courses/{COURSE}/grid/?", GridPage, kw),
        (f"{p}courses/{COURSE}/grid/{USER}/snapshot\\.png", SnapshotProxy, kw),
        (f"{p}api/courses/{COURSE}/grid", GridApi, kw),
        (f"{p}api/courses/{COURSE}/grid/{USER}/help", HelpApi, kw),
        (f"{p}api/courses/{COURSE}/grid/{USER}/reset", ResetApi, kw),
        (f"{p}api/courses/{COURSE}/broadcast", BroadcastApi, kw),
    ]
