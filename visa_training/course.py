"""A course as the trainer defines it (YAML in ``hub_config/``, or the course page), parsed and checked.

Pure functions: `load_courses` reads the YAML file, `parse_course` one entry; both raise
`CourseError` naming the course and the field, so a typo stops the service at start with a
message a trainer can act on rather than a half-loaded course.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import yaml

COURSE_ID_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,22}[a-z0-9])?$")
# a facility account / hub user name (visa_authenticator.catalogue.PERSON_ID_RE)
USER_RE = re.compile(r"^[a-z0-9][a-z0-9._@+-]{0,127}$")
RELATIVE_DAY_RE = re.compile(r"^today\s*([+-]\s*\d{1,4})?$")
FIELDS = {"id", "title", "trainers", "start", "end", "plan", "proposal", "materials", "participants",
          "guest_seats", "download_days"}
MAX_SEATS = 500


class CourseError(ValueError):
    """A course definition that cannot be used; the message names the course and the field."""


@dataclass(frozen=True)
class Course:
    """One course. Times are aware UTC datetimes; `materials` is an absolute host path ("" = none)."""

    id: str
    title: str
    trainers: tuple[str, ...]
    starts_at: datetime
    ends_at: datetime
    plan: str
    proposal: str | None = None
    materials: str = ""
    participants: tuple[str, ...] = ()
    guest_seats: int = 0
    download_days: int = 7
    download_until: datetime = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "download_until", self.ends_at + timedelta(days=self.download_days))

    @property
    def server_name(self) -> str:
        """The participant's named server of this course (contract item 3)."""
        return f"course-{self.id}"

    def ended(self, now: datetime) -> bool:
        return now >= self.ends_at


def iso(dt: datetime) -> str:
    """An aware UTC time as the service's JSON gives it (``2026-03-02T09:00:00Z``)."""
    return dt.isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_when(value: Any, now: datetime, *, end: bool) -> datetime:
    """An ISO date or datetime (UTC), or ``today±N`` days (demos). A date is its first second for a
    start and its last for an end, so ``end: 2026-12-05`` includes the whole of that day."""
    if isinstance(value, datetime):
        day_or_time: date | datetime = value
    elif isinstance(value, date):
        day_or_time = value
    elif isinstance(value, str):
        text = value.strip()
        m = RELATIVE_DAY_RE.match(text)
        if m:
            day_or_time = now.astimezone(UTC).date() + timedelta(days=int((m.group(1) or "0").replace(" ", "")))
        else:
            try:
                day_or_time = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(f"{value!r} is not an ISO date, datetime or today±N") from None
    else:
        raise ValueError(f"{value!r} is not an ISO date, datetime or today±N")
    if isinstance(day_or_time, datetime):
        return day_or_time.replace(tzinfo=UTC) if day_or_time.tzinfo is None else day_or_time.astimezone(UTC)
    return datetime.combine(day_or_time, time(23, 59, 59) if end else time(0, 0), tzinfo=UTC)


def _names(raw: Any, what: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str) or not isinstance(raw, Sequence):
        raise ValueError(f"{what} must be a list of user names")
    out: list[str] = []
    for item in raw:
        name = str(item).strip().lower()
        if not USER_RE.match(name):
            raise ValueError(f"{str(item)[:40]!r} is not a valid user name")
        if name not in out:
            out.append(name)
    return tuple(out)


def _count(raw: Any, what: str, default: int, maximum: int) -> int:
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= maximum:
        raise ValueError(f"{what} must be a whole number from 0 to {maximum}")
    return raw


def materials_path(raw: Any, base: Path | None) -> str:
    """The materials folder as an absolute path: relative to `base` (the YAML file's folder, or the
    configured materials root), never outside it, and an existing folder."""
    if raw in (None, ""):
        return ""
    if not isinstance(raw, str):
        raise ValueError("must be a folder path")
    path = Path(raw)
    if base is not None and not path.is_absolute():
        path = (base / path).resolve()
        if not path.is_relative_to(base.resolve()):
            raise ValueError(f"{raw!r} is outside {base}")
    if not path.is_dir():
        raise ValueError(f"{raw!r} is not a folder ({path})")
    return str(path)


def parse_course(raw: Any, now: datetime, base: Path | None = None, label: str = "course") -> Course:
    """One course from its mapping (YAML entry or the page's form); `CourseError` naming the field."""
    if not isinstance(raw, Mapping):
        raise CourseError(f"{label}: must be a mapping of the course's fields")
    cid = str(raw.get("id") or "")
    name = f"course {cid!r}" if cid else label

    def fail(field_name: str, why: str) -> CourseError:
        return CourseError(f"{name}, {field_name}: {why}")

    unknown = sorted(set(map(str, raw)) - FIELDS)
    if unknown:
        raise fail(unknown[0], f"unknown field (known: {', '.join(sorted(FIELDS))})")
    if not COURSE_ID_RE.match(cid):
        raise fail("id", "a slug of a-z, 0-9 and '-', at most 24 characters, is required")
    title = str(raw.get("title") or "").strip()
    if not title or len(title) > 200:
        raise fail("title", "required, at most 200 characters")
    values: dict[str, Any] = {}
    for key, parse in (
        ("trainers", lambda v: _names(v, "trainers")),
        ("participants", lambda v: _names(v, "participants")),
        ("start", lambda v: parse_when(v, now, end=False)),
        ("end", lambda v: parse_when(v, now, end=True)),
        ("guest_seats", lambda v: _count(v, "guest_seats", 0, MAX_SEATS)),
        ("download_days", lambda v: _count(v, "download_days", 7, 365)),
        ("materials", lambda v: materials_path(v, base)),
    ):
        if key in ("start", "end") and raw.get(key) in (None, ""):
            raise fail(key, "required")
        try:
            values[key] = parse(raw.get(key))
        except ValueError as e:
            raise fail(key, str(e)) from None
    if not values["trainers"]:
        raise fail("trainers", "at least one trainer is required")
    if values["end"] <= values["start"]:
        raise fail("end", "must be after the start")
    plan = str(raw.get("plan") or "").strip()
    if not plan:
        raise fail("plan", "required (a plan id of the hub's catalogue)")
    proposal = str(raw.get("proposal") or "").strip() or None
    if proposal and not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", proposal):
        raise fail("proposal", f"{proposal[:40]!r} is not a proposal id")
    return Course(
        id=cid, title=title, trainers=values["trainers"], starts_at=values["start"], ends_at=values["end"],
        plan=plan, proposal=proposal, materials=values["materials"], participants=values["participants"],
        guest_seats=values["guest_seats"], download_days=values["download_days"],
    )


def load_courses(path: str | Path, now: datetime) -> list[Course]:
    """Every course of the YAML file at `path` (``courses: [...]``); a missing file is no course."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise CourseError(f"{path}: not valid YAML: {e}") from None
    entries = doc.get("courses") if isinstance(doc, Mapping) else None
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise CourseError(f"{path}: 'courses' must be a list")
    courses: list[Course] = []
    for i, entry in enumerate(entries, 1):
        course = parse_course(entry, now, path.parent, label=f"{path.name}: course #{i}")
        if any(c.id == course.id for c in courses):
            raise CourseError(f"course {course.id!r}, id: defined twice in {path.name}")
        courses.append(course)
    return courses
