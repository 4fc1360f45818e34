"""Course instances on the hub side (issue 19): the named server `course-<id>` of a participant.

The training service (visa-training) knows the courses; the hub asks its internal API, with the
shared secret, who takes part and with which plan, proposal and materials. The spawner then
forces those, whatever the person's own entitlements (a participant may never have logged in),
and the instance does not count in the person's quota. Its end is `download_until`: the
lifecycle rules of visa-ops delete it then (archived as usual).
"""
from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from jupyterhub.spawner import SpawnException
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from .backends.base import Plan
from .options import InstanceRequest, OptionError, first
from .plans import unavailable_reason

SERVER_PREFIX = "course-"
API_TIMEOUT = 10  # seconds: the internal API answers from its own database
NOT_ANSWERING = "The training service is not answering; try again in a minute."


class TrainingServiceDown(Exception):
    """The internal API did not answer (down, timeout, 5xx, or not configured)."""


@dataclass(frozen=True)
class CourseSeat:
    """What the internal API says about one participant of one course."""

    course: str
    title: str
    plan: str
    proposal: str
    materials: str
    starts_at: datetime
    ends_at: datetime
    download_until: datetime
    started: bool = False
    warm_pool: bool = False
    trainers: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CourseSeat:
        return cls(
            course=str(data["course"]), title=str(data.get("title") or data["course"]), plan=str(data["plan"]),
            proposal=str(data.get("proposal") or ""), materials=str(data.get("materials") or ""),
            starts_at=parse_time(data["starts_at"]), ends_at=parse_time(data["ends_at"]),
            download_until=parse_time(data["download_until"]), started=bool(data.get("started")),
            warm_pool=bool(data.get("warm_pool")),
            trainers=tuple(str(t) for t in data.get("trainers") or () if isinstance(t, str)))

    def saved_options(self) -> dict[str, Any]:
        """What the spawner keeps in the server's user_options (visa-ops and the home page read it;
        visa-collab lets `course_trainers` watch and help: always written, so an owner's own value
        never survives a start)."""
        return {"course": self.course, "course_ends_at": iso(self.ends_at), "download_until": iso(self.download_until),
                "proposal": self.proposal, "plan": self.plan, "course_trainers": list(self.trainers)}


def seat_request(seat: CourseSeat, options: Mapping[str, Any], *, plans: Sequence[Plan], disabled: Collection[str],
                 gpus_free: Mapping[str, int], screens: Sequence[str], keyboards: Mapping[str, str]) -> InstanceRequest:
    """The request of a course instance: the course's plan and proposal, whatever the person's own
    entitlements; the screen and keyboard the options ask for if offered. OptionError if the plan
    cannot be started on this hub now."""
    plan = next((p for p in plans if p.id == seat.plan), None)
    if plan is None:
        raise OptionError(f"The course's plan “{seat.plan[:64]}” is not offered by this hub; ask the trainer.")
    why = unavailable_reason(plan, disabled, gpus_free)
    if why:
        raise OptionError(f"Plan “{plan.display_name}” cannot be started: {why}. Ask the trainer.")
    screen = first(options, "screen") if first(options, "screen") in screens else screens[0]
    keyboard = first(options, "keyboard") if first(options, "keyboard") in keyboards else next(iter(keyboards))
    return InstanceRequest("", "", seat.proposal, plan.id, screen, keyboard)


def parse_time(value: Any) -> datetime:
    """An ISO 8601 time as an aware UTC datetime (naive ones are UTC)."""
    when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds")


def server_name(course: str) -> str:
    return f"{SERVER_PREFIX}{course}"


def course_of(name: str, options: Mapping[str, Any] | None) -> str:
    """The course id this server is an instance of ("" for an ordinary instance)."""
    course = str((options or {}).get("course") or "")
    return course if course and name == server_name(course) else ""


def counts_in_quota(name: str, options: Mapping[str, Any] | None) -> bool:
    """An instance counts in its owner's quota unless it is a course instance the training service
    confirmed (the spawner saved its `course_ends_at`): a refused course record still counts."""
    return not (course_of(name, options) and (options or {}).get("course_ends_at"))


def quota_beside_courses(quota: int, spawners: Iterable[tuple[str, Mapping[str, Any] | None]]) -> int:
    """The person's quota raised by their confirmed course instances, so those do not use it up
    (-1 and 0 unchanged). `spawners`: (server name, user_options) of their named servers."""
    if quota <= 0:
        return quota
    return quota + sum(1 for name, options in spawners if name and not counts_in_quota(name, options))


def download_open(options: Mapping[str, Any] | None, now: datetime | None = None) -> bool:
    """May the owner still download the work of this course instance?"""
    until = (options or {}).get("download_until")
    if not until or not (options or {}).get("course"):
        return False
    try:
        return (now or datetime.now(UTC)) <= parse_time(until)
    except ValueError:
        return False


async def internal_api(base_url: str, token: str, method: str, path: str, timeout: float) -> tuple[int, dict]:
    """(status, JSON body) of one call to visa-training's internal API; TrainingServiceDown when it
    does not answer or fails (5xx). The token goes in a header, never in a URL or a log line."""
    if not base_url or not token:
        raise TrainingServiceDown("VisaSpawner.training_api_url or training_api_token is not set")
    request = HTTPRequest(base_url.rstrip("/") + "/" + path, method=method, body=b"" if method == "POST" else None,
                          headers={"Authorization": f"token {token}", "Accept": "application/json"},
                          connect_timeout=timeout, request_timeout=timeout)
    try:
        response = await AsyncHTTPClient().fetch(request, raise_error=False)
    except (OSError, HTTPClientError, TimeoutError) as e:
        raise TrainingServiceDown(f"{type(e).__name__}: {e}") from None
    if response.code >= 500 or response.code == 599:
        raise TrainingServiceDown(f"HTTP {response.code}")
    try:
        body = json.loads(response.body or b"{}")
    except ValueError:
        body = {}
    return response.code, body if isinstance(body, dict) else {}


async def fetch_seat(base_url: str, token: str, course: str, user: str, timeout: float) -> CourseSeat:
    """The participant's course, or a SpawnException the person understands."""
    path = f"courses/{quote(course, safe='')}/participants/{quote(user, safe='')}"
    try:
        status, body = await internal_api(base_url, token, "GET", path, timeout)
    except TrainingServiceDown:
        raise SpawnException(NOT_ANSWERING, reason="training") from None
    if status == 404:
        raise SpawnException(f"You are not a participant of the course {course[:24]}: ask its trainer.",
                             reason="not-participant", status_code=403)
    try:
        if status != 200:
            raise ValueError(f"HTTP {status}")
        return CourseSeat.from_json(body)
    except (KeyError, ValueError, TypeError) as e:
        raise SpawnException(f"The training service gave no usable answer about the course {course[:24]}; "
                             "ask an admin.", reason="training", log_message=f"{e}") from None


async def course_seat(spawner: Any) -> CourseSeat | None:
    """A VisaSpawner's course (the training service says; None for an ordinary instance): refused
    after the course's end; its end saved in user_options (the spawner commits them with the
    instruments), its title as the display name."""
    options = spawner.user_options or {}
    course = str(options.get("course") or "")
    if not course:
        return None
    if spawner.name != server_name(course):
        raise SpawnException(f"An instance of a course is the server {server_name(course)[:40]}.", reason="options")
    seat = await fetch_seat(spawner.training_api_url, spawner.training_api_token, course, spawner.user.name,
                            API_TIMEOUT)
    if datetime.now(UTC) > seat.ends_at:
        raise SpawnException(f"The course {seat.title} ended on {seat.ends_at:%Y-%m-%d}: download your work from "
                             f"the home page until {seat.download_until:%Y-%m-%d}.", reason="course-ended")
    spawner.user_options = {**options, **seat.saved_options()}
    orm = spawner.orm_spawner
    if orm is not None and orm.display_name in (None, "", spawner.name):
        orm.display_name = seat.title
    return seat
