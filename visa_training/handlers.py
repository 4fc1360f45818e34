"""HTTP face of the training service: the JSON API of the course pages, participants' "My courses",
and the internal API the hub process calls with the shared secret (docs/training.md).

Trainers and administrators authenticate through the hub's OAuth (cookie, JupyterHub's XSRF
rules) or a token; every course action checks that the caller trains *that* course (403
otherwise, JSON or HTML alike). The internal API knows one caller, the hub, by
``Authorization: token <VISA_TRAINING_INTERNAL_TOKEN>`` compared in constant time.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from tornado import web

from visa_collab.handlers import BaseHandler as CollabBaseHandler
from visa_collab.hubapi import HubError
from visa_collab.roles import ADMIN_SCOPE

from .course import Course
from .training import Training, TrainingError, iso

log = logging.getLogger("visa_training")
TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
jinja = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
COURSE = r"([a-z0-9-]{1,24})"


class BaseHandler(CollabBaseHandler):
    """Settings it reads: ``training`` (`Training`), ``service_prefix``, ``hub_prefix``, ``hub_public_prefix``."""

    templates = jinja

    @property
    def training(self) -> Training:
        return self.settings["training"]

    def is_admin(self) -> bool:
        """Hub admin, holder of ``custom:visa-admin``, or in the group ``role:admin``."""
        user = self.current_user or {}
        return bool(user.get("admin") or ADMIN_SCOPE in (user.get("scopes") or ())
                    or "role:admin" in (user.get("groups") or ()))

    async def course(self, course_id: str) -> Course:
        """The course, if the caller trains it or is an administrator (else 403; unknown: 404)."""
        return await self.guard(self.training.course_for(course_id, self.actor, self.is_admin()))

    async def guard(self, coro):
        try:
            return await coro
        except TrainingError as e:
            raise web.HTTPError(e.status, "%s", e.message) from None
        except HubError as e:
            log.error("Hub API call failed: %s", e)
            raise web.HTTPError(502, "The hub did not answer as expected; nothing was changed.") from None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """JSON for the API, the service's own error page otherwise; never a traceback."""
        if self.api or self.request.path.startswith(self.prefix + "api/"):
            super().write_error(status_code, **kwargs)
            return
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = self._reason
        if isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(self.templates.get_template("course_error.html").render(
            prefix=self.prefix, hub_prefix=self.settings["hub_prefix"], status=status_code, message=message,
            user=None, xsrf=""))

    def render(self, template: str, status: int = 200, **ns: Any) -> None:  # type: ignore[override]
        user = self.current_user
        html = self.templates.get_template(template).render(
            prefix=self.prefix, hub_prefix=self.settings["hub_prefix"], user=user and user.get("name"),
            xsrf=self.xsrf if user else "", **ns)
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(html)


class ApiHandler(BaseHandler):
    api = True


def course_model(course: Course) -> dict:
    return {"id": course.id, "title": course.title, "trainers": list(course.trainers), "plan": course.plan,
            "proposal": course.proposal, "materials": course.materials, "server": course.server_name,
            "participants": list(course.participants), "guest_seats": course.guest_seats,
            "starts_at": iso(course.starts_at), "ends_at": iso(course.ends_at),
            "download_until": iso(course.download_until)}


async def course_detail(training: Training, course: Course, hub_public: str) -> dict:
    """Everything the course page shows: the course, its start, each participant's progress, the seats."""
    row = await training.store.course_row(course.id)
    people = await training.store.participants(course.id)
    seats = await training.store.seats(course.id)
    return {
        **course_model(course),
        "started": row["started_at"] is not None, "started_by": row["started_by"],
        "warm_pool": bool(row["pool"]), "start_note": row["start_note"] or "",
        "plan_problem": await training.plan_problem(course),
        "progress": [{"user": p["user"], "kind": p["kind"], "display_name": p["display_name"],
                      "state": p["state"] or "", "detail": p["detail"] or ""} for p in people],
        "seats": [{"number": i, "state": s["state"], "used_by": s["used_by"],
                   "link": f"{hub_public}visa/seat/{s['token']}"} for i, s in enumerate(seats, 1)],
    }


class MyCoursesHandler(ApiHandler):
    """GET api/my-courses: the courses the caller takes part in (the hub's home page may show them)."""

    @web.authenticated
    async def get(self) -> None:
        self.send({"courses": await self.training.my_courses(self.actor)})


class CoursesHandler(ApiHandler):
    @web.authenticated
    async def get(self) -> None:
        courses = await self.training.courses_for(self.actor, self.is_admin())
        self.send({"courses": [course_model(c) for c in courses]})

    @web.authenticated
    async def post(self) -> None:
        course, report = await self.guard(self.training.create_course(self.actor, self.body(), self.is_admin()))
        self.send({"course": course_model(course), "report": report}, 201)


class CourseHandler(ApiHandler):
    @web.authenticated
    async def get(self, course_id: str) -> None:
        course = await self.course(course_id)
        self.send(await course_detail(self.training, course, self.settings["hub_public_prefix"]))


class ParticipantsHandler(ApiHandler):
    """POST api/courses/<id>/participants ``{"list": "..."}``: a verdict per line, the valid ones added."""

    @web.authenticated
    async def post(self, course_id: str) -> None:
        course = await self.course(course_id)
        text = self.body().get("list")
        if not isinstance(text, str) or not text.strip():
            raise web.HTTPError(400, "Give the participants as text: one user name, e-mail or Name <e-mail> a line.")
        self.send({"report": await self.guard(self.training.add_participants(course, text))})


class SeatsHandler(ApiHandler):
    @web.authenticated
    async def post(self, course_id: str) -> None:
        course = await self.course(course_id)
        count = self.body().get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int):
            raise web.HTTPError(400, "count must be a whole number.")
        await self.guard(self.training.add_seats(course, count))
        self.send({"seats": (await course_detail(self.training, course, self.settings["hub_public_prefix"]))["seats"]},
                  201)


class StartHandler(ApiHandler):
    """POST api/courses/<id>/start: "Start the class" (progress: GET api/courses/<id>)."""

    @web.authenticated
    async def post(self, course_id: str) -> None:
        course = await self.course(course_id)
        if course.ended(self.training.clock()):
            raise web.HTTPError(400, "This course has ended.")
        self.send(await self.guard(self.training.start_class(course, self.actor)), 202)


# -- the hub's internal API ------------------------------------------------------------------------

class InternalHandler(web.RequestHandler):
    """Only the hub process, with the shared secret; errors as ``{"error": ...}``."""

    def prepare(self) -> None:
        expected = self.settings["internal_token"]
        header = self.request.headers.get("Authorization", "")
        given = header[len("token "):] if header.lower().startswith("token ") else ""
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            raise web.HTTPError(403, "This API is for the hub only.")

    @property
    def training(self) -> Training:
        return self.settings["training"]

    def send(self, model: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(model))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = self._reason
        if isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": message}))

    async def guard(self, coro):
        try:
            return await coro
        except TrainingError as e:
            raise web.HTTPError(e.status, "%s", e.message) from None


class InternalParticipantHandler(InternalHandler):
    async def get(self, course_id: str, user: str) -> None:
        self.send(await self.guard(self.training.participant_info(course_id, user)))


class InternalRedeemHandler(InternalHandler):
    async def post(self, token: str) -> None:
        self.send(await self.guard(self.training.redeem(token)))


def api_handlers(prefix: str) -> list[tuple]:
    p = prefix
    return [
        (f"{p}api/my-courses", MyCoursesHandler),
        (f"{p}api/courses", CoursesHandler),
        (f"{p}api/courses/{COURSE}", CourseHandler),
        (f"{p}api/courses/{COURSE}/participants", ParticipantsHandler),
        (f"{p}api/courses/{COURSE}/seats", SeatsHandler),
        (f"{p}api/courses/{COURSE}/start", StartHandler),
        (f"{p}api/internal/courses/([^/]+)/participants/([^/]+)", InternalParticipantHandler),
        (f"{p}api/internal/seats/([A-Za-z0-9_-]{{1,128}})/redeem", InternalRedeemHandler),
    ]
