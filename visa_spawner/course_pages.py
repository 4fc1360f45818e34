"""Hub pages of courses (issue 19): joining by a seat link, and "Download my work".

A seat link (`/hub/visa/seat/<token>`, made by visa-training) lets someone without a facility
account join a course: the GET shows a page and consumes nothing; its form POSTs (with the XSRF
token, as every hub form), the hub redeems the seat through visa-training's internal API (one
use, atomically), creates the hub user the service named, gives it GUEST entitlements until the
course end (`auth_state["visa"]`, the authenticator's shape, with `seat` marking an account the
catalogue does not know), signs it in and starts its course instance. Such an account has no
password: its home page shows a personal sign-in link (`/hub/visa/seat-return/<user>/<token>`,
a second 32-byte secret kept in its auth_state) to come back from another browser until the
account ends.

"Download my work" streams a tar.gz of a course instance's home (`Backend.archive`, written in an
executor to a private temporary directory) until the course's `download_until`.
"""
from __future__ import annotations

import asyncio
import hmac
import re
import secrets
import shutil
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jupyterhub.handlers import BaseHandler
from jupyterhub.utils import url_path_join
from tornado import web

from .archives import Archive, ArchiveDownloadHandler, archive_id
from .backends.base import BackendError
from .course import API_TIMEOUT, NOT_ANSWERING, TrainingServiceDown, course_of, download_open, internal_api, server_name
from .spawning import spawn_then_progress

#: a seat token as visa-training makes them (its route accepts the same)
SEAT_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: a hub user name as visa-training makes them, or a facility-like account name
USER_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
COURSE_ID = re.compile(r"[a-z0-9-]{1,24}")
#: auth_state key of a seat account's personal sign-in token (shown on its home page)
RETURN_KEY = "seat_return"


def seat_entitlements(redeemed: dict[str, Any], proposal_title: str, open_data: bool, now: datetime) -> dict:
    """`auth_state["visa"]` of a seat's account: GUEST until the course end, the course's proposal,
    no quota of its own (its course instance does not use one), `seat` naming the course."""
    course, proposal = str(redeemed["course"]), str(redeemed.get("proposal") or "")
    return {
        "person": {"id": str(redeemed["user"]), "name": str(redeemed.get("display_name") or redeemed["user"]),
                   "email": ""},
        "roles": ["GUEST"], "role_expires": {"GUEST": str(redeemed["expires"])}, "admin": False, "quota": 0,
        "proposals": [{"id": proposal, "title": proposal_title, "instruments": [], "open_data": open_data,
                       "relation": "course"}] if proposal else [],
        "instrument_control": [], "computed_at": now.isoformat(timespec="seconds"),
        "seat": {"course": course, "groups": seat_groups(course)},
    }


def seat_groups(course: str) -> list[str]:
    return ["course:" + course, "role:guest"]


def check_redeemed(body: dict[str, Any]) -> dict[str, Any]:
    """The redeem answer, its fields checked (ValueError: a bug of the service, never shown as is)."""
    user, course = str(body.get("user") or ""), str(body.get("course") or "")
    if not USER_NAME.fullmatch(user) or not COURSE_ID.fullmatch(course):
        raise ValueError(f"bad user or course in the redeem answer: {user!r} {course!r}")
    date.fromisoformat(str(body.get("expires")))
    return body


class SeatHandler(BaseHandler):
    """GET/POST /hub/visa/seat/<token>: join a course with a one-use sign-up link."""

    def _training_api(self) -> tuple[str, str]:
        section = self.config.get("VisaSpawner", {})
        return str(section.get("training_api_url", "")), str(section.get("training_api_token", ""))

    async def _page(self, status: int, **values: Any) -> None:
        self.set_status(status)
        self.finish(await self.render_template("seat.html", **values))

    async def get(self, token: str) -> None:
        if not SEAT_TOKEN.fullmatch(token):
            await self._page(404, error="This sign-up link is not valid: check that it was copied whole.")
            return
        await self._page(200, signed_in=self.current_user)

    async def post(self, token: str) -> None:
        if not SEAT_TOKEN.fullmatch(token):
            await self._page(404, error="This sign-up link is not valid: check that it was copied whole.")
            return
        url, secret = self._training_api()
        try:
            status, body = await internal_api(url, secret, "POST", f"seats/{quote(token, safe='')}/redeem", API_TIMEOUT)
        except TrainingServiceDown as e:
            self.log.warning("Seat redeem: the training service did not answer (%s)", e)
            await self._page(503, error=NOT_ANSWERING)
            return
        if status in (404, 410):
            fallback = "This sign-up link is not known." if status == 404 else "This sign-up link was already used."
            await self._page(status, error=str(body.get("error") or fallback))
            return
        try:
            if status != 200:
                raise ValueError(f"HTTP {status}")
            redeemed = check_redeemed(body)
        except (ValueError, TypeError) as e:
            self.log.error("Seat redeem: unusable answer from the training service: %s", e)
            await self._page(502, error="The training service gave no usable answer; ask the trainer.")
            return
        if self.find_user(redeemed["user"]) is not None:  # never hand an existing account to a link
            self.log.error("Seat redeem: the training service named an existing user %s", redeemed["user"])
            await self._page(409, error="This sign-up link cannot make your account; ask the trainer.")
            return
        user = await self._make_user(redeemed)
        self.set_login_cookie(user)
        self.log.info("%s joined the course %s by a seat link", user.name, redeemed["course"])
        course = redeemed["course"]  # the spawner names the instance after the course's title
        await spawn_then_progress(self, user, server_name(course), "", {"course": course})

    async def _make_user(self, redeemed: dict[str, Any]) -> Any:
        """The new hub user, its auth_state and groups written as a login would (`auth_to_user`)."""
        title, open_data = await self._proposal(str(redeemed.get("proposal") or ""))
        visa = seat_entitlements(redeemed, title, open_data, datetime.now(UTC))
        return await self.auth_to_user({"name": redeemed["user"], "admin": False, "groups": visa["seat"]["groups"],
                                        "auth_state": {"visa": visa, RETURN_KEY: secrets.token_urlsafe(32)}})

    async def _proposal(self, proposal: str) -> tuple[str, bool]:
        """(title, open data today) of a proposal from the authenticator's catalogue, if it has one."""
        catalogue = getattr(self.authenticator, "catalogue", None)
        if not proposal or catalogue is None:
            return "", False
        try:
            found = await catalogue.proposals([proposal])
        except Exception:  # a catalogue outage: the title is only a label
            self.log.warning("Seat: the title of proposal %s is unknown (catalogue unavailable)", proposal)
            return "", False
        for p in found:
            return str(p.title), bool(p.is_open_on(datetime.now(UTC).date()))
        return "", False


class SeatReturnHandler(BaseHandler):
    """GET/POST /hub/visa/seat-return/<user>/<token>: a seat account signs in again from any browser.

    The GET shows a button and checks nothing, so it tells nobody which accounts exist; the POST
    (with the XSRF token) signs in only when the token is that seat account's own.
    """

    async def _page(self, status: int, name: str = "", error: str = "") -> None:
        self.set_status(status)
        self.finish(await self.render_template("seat_return.html", account=name, error=error))

    async def get(self, name: str, token: str) -> None:
        await self._page(200, name=name if USER_NAME.fullmatch(name) else "")

    async def post(self, name: str, token: str) -> None:
        user = self.find_user(name) if USER_NAME.fullmatch(name) and SEAT_TOKEN.fullmatch(token) else None
        state = (await user.get_auth_state() or {}) if user is not None else {}
        expected = str(state.get(RETURN_KEY) or "")
        if not (expected and (state.get("visa") or {}).get("seat") and hmac.compare_digest(expected, token)):
            self.log.warning("Seat return: a sign-in link for %r did not match an account", name[:64])
            await self._page(404, error="This sign-in link is not valid, or the course account it was for has ended.")
            return
        self.set_login_cookie(user)
        self.log.info("%s signed in again with their personal course link", user.name)
        self.redirect(url_path_join(self.hub.base_url, "home"))


class CourseWorkHandler(ArchiveDownloadHandler):
    """GET /hub/visa/course-work/<owner>/<server>: the home of a course instance as a tar.gz,
    for its owner, until the course's `download_until` (403 after)."""

    @web.authenticated
    async def get(self, owner: str, server: str) -> None:
        user = self.current_user
        if owner != user.name:
            raise web.HTTPError(403, "Only the participant may download the work of their course instance.")
        orm_spawner = user.orm_spawners.get(server)
        options = (orm_spawner.user_options or {}) if orm_spawner is not None else {}
        if not course_of(server, options):
            raise web.HTTPError(404, "No such course instance.")
        if not download_open(options):
            raise web.HTTPError(403, f"The work of this course could be downloaded until "
                                     f"{str(options.get('download_until'))[:10]}.")
        spawner = user.spawners[server]
        if spawner.identity is None:
            raise web.HTTPError(404, "This course instance never started: there is nothing to download yet.")
        if spawner.identity.backend != "sandbox" and (spawner.active or spawner.ready):
            raise web.HTTPError(409, "Stop the instance first: its disk is copied when it is stopped.")
        backend, state = spawner._owning_backend()
        loop = asyncio.get_running_loop()
        workdir = Path(await loop.run_in_executor(None, tempfile.mkdtemp, "", "visa-course-work-"))
        try:
            now = datetime.now(UTC)
            ident = archive_id(server, now)
            try:
                made = await backend.archive(state, workdir / ident)
            except BackendError as e:
                self.log.error("Course work of %s/%s: %s %s", owner, server, e.message, e.log_detail)
                raise web.HTTPError(409 if e.reason == "archive-unsupported" else 502, e.message) from None
            if not isinstance(made, Path):
                raise web.HTTPError(404, "This instance has no home to download.")
            size = (await loop.run_in_executor(None, made.stat)).st_size
            found = Archive(id=ident, file=made.name, owner=owner, server=server,
                            display_name=spawner.display_name or server, proposal=str(options.get("proposal") or ""),
                            plan=str(options.get("plan") or ""), backend=spawner.identity.backend,
                            created=now.isoformat(timespec="seconds"), size=size)
            f = await loop.run_in_executor(None, open, made, "rb")
            try:
                await self._send(found, self._read(f))
            finally:
                f.close()
        finally:
            await loop.run_in_executor(None, shutil.rmtree, workdir, True)


handlers = [(r"/visa/seat/([^/]+)", SeatHandler), (r"/visa/seat-return/([^/]+)/([^/]+)", SeatReturnHandler),
            (r"/visa/course-work/([^/]+)/([^/]+)", CourseWorkHandler)]
