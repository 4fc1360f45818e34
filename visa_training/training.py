"""What the training service does, behind its pages and APIs: courses, participants, seats, the
class start, the hub's internal questions, and the end of a course.

The hub is reached only through its REST API (`TrainingHub`); facility accounts are looked up in
the catalogue file the hub reads (`Directory`). Every refusal is a `TrainingError` with the HTTP
status and a message meant for the trainer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

from visa_authenticator.catalogue_data import CatalogueData
from visa_authenticator.file_catalogue import FileCatalogue
from visa_authenticator.rules import active_roles
from visa_collab.hubapi import HubError

from .course import Course, CourseError, iso, load_courses, parse_course
from .hubclient import TrainingHub
from .pacing import DEFAULT_CONCURRENCY, DEFAULT_INTERVAL, StartSpacing
from .roster import GUEST, plan_refusal, read_list
from .store import SeatError, Store

log = logging.getLogger("visa_training")


class TrainingError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class Directory:
    """Facility accounts by user name or e-mail, and their roles, from the hub's catalogue file
    (``FileCatalogue``; re-read when it changes). Without one, any valid name is taken as is."""

    def __init__(self, catalogue_path: str = "") -> None:
        self.catalogue = FileCatalogue(path=catalogue_path) if catalogue_path else None

    async def snapshot(self) -> CatalogueData | None:
        if self.catalogue is None:
            return None
        return await asyncio.get_running_loop().run_in_executor(None, self.catalogue.data)

    @staticmethod
    def finders(data: CatalogueData | None) -> tuple[Callable[[str], str | None], Callable[[str], str | None]]:
        if data is None:
            return (lambda name: name), (lambda email: None)
        emails = {p.email.lower(): p.id for p in data.persons if p.email}
        return (lambda name: name if data.person(name) else None), emails.get

    @staticmethod
    def roles(data: CatalogueData | None, users: Sequence[str], on: date) -> dict[str, list[str]]:
        """Each user's facility roles on `on` (unknown to the catalogue: no role)."""
        if data is None:
            return {}
        out = {}
        for user in users:
            person = data.person(user)
            out[user] = active_roles(person, on) if person else []
        return out


class Training:
    def __init__(self, store: Store, hub: TrainingHub, *, plans: Sequence[Mapping[str, Any]] = (),
                 directory: Directory | None = None, materials_root: str = "", collab_url: str = "",
                 pool_spare: int = 2, start_timeout: float = 300.0, archive_dir: str = "",
                 clock: Callable[[], datetime] | None = None, creator_roles: Sequence[str] = ("STAFF",),
                 start_interval: float = DEFAULT_INTERVAL, start_concurrency: int = DEFAULT_CONCURRENCY) -> None:
        self.store, self.hub = store, hub
        self.plans = list(plans)
        self.directory = directory or Directory()
        self.materials_root = materials_root
        self.collab_url = collab_url.rstrip("/")
        self.pool_spare, self.start_timeout, self.archive_dir = pool_spare, start_timeout, archive_dir
        self.clock = clock or store.clock
        self.creator_roles = tuple(creator_roles)  # facility roles that may create courses on the page
        self.start_interval, self.start_concurrency = start_interval, max(1, start_concurrency)  # visa_training.pacing
        self.tasks: set[asyncio.Task] = set()

    # -- courses -------------------------------------------------------------------------------
    async def load_yaml(self, path: str) -> list[Course]:
        """The YAML's courses into the store (the YAML wins for what it names); a plan its
        participants may not use is logged, not fatal: the course page shows it too."""
        courses = await asyncio.get_running_loop().run_in_executor(None, load_courses, path, self.clock())
        for course in courses:
            why = await self.plan_problem(course)
            if why:
                log.warning("Course %s: %s", course.id, why)
            await self.store.save_course(course, source="yaml", actor="hub_config")
        return courses

    async def plan_problem(self, course: Course) -> str | None:
        data = await self.directory.snapshot()
        roles = self.directory.roles(data, course.participants, course.starts_at.date())
        return plan_refusal(course.plan, self.plans, roles, course.guest_seats)

    def materials_choices(self) -> list[str]:
        """The folders a course created on the page may use: direct subfolders of the materials root."""
        root = Path(self.materials_root) if self.materials_root else None
        if root is None or not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))

    async def create_course(self, actor: str, form: Mapping[str, Any],
                            admin: bool = False) -> tuple[Course, list[dict]]:
        """A course from the page's form; participants as an uploaded list (per-line report).

        Only facility staff (`creator_roles`) and administrators create courses, and a course's
        proposal must be open data: its participants get its data whatever their own rights,
        and its instances escape their quota (the YAML, written by the hub's admins, is trusted)."""
        data = await self.directory.snapshot()
        if not admin and not set(self.directory.roles(data, [actor], self.clock().date()).get(actor, ())) \
                & set(self.creator_roles):
            raise TrainingError(403, f"Only {' or '.join(self.creator_roles) or 'administrators'} "
                                     "may create courses; ask one of them.")
        materials = str(form.get("materials") or "")
        if materials and materials not in self.materials_choices():
            raise TrainingError(400, f"There is no materials folder {materials[:60]!r}.")
        raw = {k: form.get(k) for k in ("id", "title", "start", "end", "plan", "proposal")}
        raw.update(trainers=sorted({actor, *str(form.get("trainers") or "").replace(",", " ").split()}),
                   materials=materials, guest_seats=_int(form.get("guest_seats"), "guest_seats"),
                   download_days=_int(form.get("download_days"), "download_days", 7))
        try:
            course = parse_course(raw, self.clock(), Path(self.materials_root) if self.materials_root else None)
        except CourseError as e:
            raise TrainingError(400, str(e)) from None
        if course.ends_at <= self.clock():
            raise TrainingError(400, f"course {course.id!r}, end: the course would already be over.")
        found = data.proposal(course.proposal) if data is not None and course.proposal else None
        if course.proposal and not (found is not None and found.is_open_on(course.starts_at.date())):
            raise TrainingError(400, f"course {course.id!r}, proposal: {course.proposal} is not open data on "
                                     f"{course.starts_at:%Y-%m-%d}; a course may only mount open data.")
        find, find_email = self.directory.finders(data)
        report = read_list(str(form.get("participants") or ""), find, find_email)
        added = [v.user for v in report if v.verdict == "added"]
        course = replace(course, participants=tuple(added))
        why = plan_refusal(course.plan, self.plans, self.directory.roles(data, added, course.starts_at.date()),
                           course.guest_seats)
        if why:
            raise TrainingError(400, f"The course was not created: {why}")
        try:
            await self.store.save_course(course, source="page", actor=actor, create=True)
        except ValueError as e:
            raise TrainingError(409, str(e)) from None
        return course, [v.as_dict() for v in report]

    async def course_for(self, course_id: str, user: str, admin: bool) -> Course:
        """The course, for its trainers and administrators only (404 unknown, 403 others)."""
        course = await self.store.course(course_id)
        if course is None:
            raise TrainingError(404, f"There is no course {course_id[:40]!r}.")
        if not admin and user not in course.trainers:
            raise TrainingError(403, f"Only the trainers of {course.title!r} may see or change it.")
        return course

    async def courses_for(self, user: str, admin: bool) -> list[Course]:
        return [c for c in await self.store.all_courses() if admin or user in c.trainers]

    async def add_participants(self, course: Course, text: str) -> list[dict]:
        """An uploaded list: a verdict per line, the valid ones added (after the plan check)."""
        data = await self.directory.snapshot()
        find, find_email = self.directory.finders(data)
        report = read_list(text, find, find_email, already=course.participants)
        added = [v.user for v in report if v.verdict == "added"]
        why = plan_refusal(course.plan, self.plans, self.directory.roles(data, added, course.starts_at.date()), 0)
        if added and why:
            raise TrainingError(400, f"Nobody was added: {why}")
        await self.store.add_participants(course.id, added)
        return [v.as_dict() for v in report]

    async def add_seats(self, course: Course, count: int) -> None:
        if not 1 <= count <= 100:
            raise TrainingError(400, "Add from 1 to 100 seats at a time.")
        if course.ended(self.clock()):
            raise TrainingError(400, "This course has ended: no new seats.")
        why = plan_refusal(course.plan, self.plans, {}, count)
        if why:
            raise TrainingError(400, why)
        await self.store.add_seats(course.id, count)

    # -- the hub's internal API --------------------------------------------------------------------
    async def participant_info(self, course_id: str, user: str) -> dict:
        course = await self.store.course(course_id)
        if course is None or user not in course.participants:
            raise TrainingError(404, f"{user[:60]} is not a participant of the course {course_id[:40]!r}.")
        row = await self.store.course_row(course_id)
        return {"course": course.id, "title": course.title, "plan": course.plan, "proposal": course.proposal,
                "materials": course.materials, "starts_at": iso(course.starts_at), "ends_at": iso(course.ends_at),
                "download_until": iso(course.download_until), "started": row["started_at"] is not None,
                "warm_pool": bool(row["pool"]), "trainers": list(course.trainers)}

    async def redeem(self, token: str) -> dict:
        try:
            course, user, number = await self.store.redeem(token)
        except SeatError as e:
            raise TrainingError(e.status, e.message) from None
        log.info("Seat %d of course %s redeemed: guest account %s", number, course.id, user)
        return {"user": user, "display_name": f"Guest {number} ({course.title})", "course": course.id,
                "expires": course.ends_at.date().isoformat(), "proposal": course.proposal}

    async def my_courses(self, user: str) -> list[dict]:
        out = []
        for course_id in await self.store.courses_of(user):
            course = await self.store.course(course_id)
            if course is not None:
                out.append({"course": course.id, "title": course.title, "server": course.server_name,
                            "starts_at": iso(course.starts_at), "ends_at": iso(course.ends_at),
                            "download_until": iso(course.download_until), "trainers": list(course.trainers)})
        return out

    # -- start the class -----------------------------------------------------------------------------
    async def start_class(self, course: Course, actor: str) -> dict:
        """Fill the warm pool, then create every participant's instance and share it with the
        trainers, in the background (progress per participant in the store)."""
        pool, note = await self._put_pool(course)
        await self.store.mark_started(course.id, actor, pool, note)
        for user in course.participants:
            await self.store.set_progress(course.id, user, "queued", "")
        task = asyncio.ensure_future(self._start_all(course))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return {"started": True, "warm_pool": pool is not None, "note": note}

    async def _put_pool(self, course: Course) -> tuple[str | None, str]:
        """Ask the hub for the course's warm pool (a server per free seat, plus the spare):
        (the pool's name, or None without one; the note the course page shows)."""
        seats = await self.store.seats(course.id)
        size = sum(1 for s in seats if s["state"] == "free") + self.pool_spare
        if not size:
            return None, "No warm pool: no free seat and no spare configured."
        try:
            answer = await self.hub.put_pool(course.id, {"plan": course.plan, "proposal": course.proposal or "",
                                                         "materials": course.materials, "size": size})
        except HubError as e:
            log.warning("Course %s: the warm pool was refused: %s", course.id, e)
            return None, f"The warm pool could not be filled ({e.message[:200]}); instances start on demand."
        if answer is None:
            return None, "This hub has no warm pool: each instance starts when it is created."
        return course.id, f"Warm pool of {size} instance(s) filling."

    async def _start_all(self, course: Course) -> None:
        limit = asyncio.Semaphore(self.start_concurrency)
        spacing = StartSpacing(self.start_interval)
        loop = asyncio.get_running_loop()

        async def one(user: str) -> None:
            async with limit:
                await asyncio.sleep(spacing.reserve(loop.time()))
                try:
                    await self._start_one(course, user)
                except Exception as e:  # each participant's failure is theirs: shown, logged, the rest go on
                    message = e.message if isinstance(e, (HubError, TrainingError)) else "unexpected error"
                    log.error("Course %s: the instance of %s failed: %s", course.id, user, message,
                              exc_info=not isinstance(e, (HubError, TrainingError)))
                    await self.store.set_progress(course.id, user, "failed", str(message)[:500])

        await asyncio.gather(*(one(u) for u in course.participants))

    async def _start_one(self, course: Course, user: str) -> None:
        server = course.server_name
        await self.store.set_progress(course.id, user, "creating", "Creating the instance")
        await self.hub.create_user(user)
        await self.hub.spawn(user, server, {"course": course.id})
        await self.store.set_progress(course.id, user, "starting", "Starting")
        loop = asyncio.get_running_loop()
        began = loop.time()
        while True:
            with self.hub.fresh():
                model = await self.hub.user(user)
            state = ((model or {}).get("servers") or {}).get(server) or {}
            if state.get("ready"):
                break
            if not state.get("pending") and loop.time() - began > 5:  # stopped, not starting: it failed
                raise TrainingError(500, "The instance failed to start (the hub's log says why).")
            if loop.time() - began > self.start_timeout:
                raise TrainingError(504, f"The instance was not ready after {self.start_timeout:.0f} s.")
            await asyncio.sleep(1.0)
        refused = await self.share_with_trainers(course, user)
        detail = "Ready, shared with the trainers" if not refused else "Ready; not shared: " + "; ".join(refused)
        await self.store.set_progress(course.id, user, "ready", detail)

    async def share_with_trainers(self, course: Course, user: str) -> list[str]:
        """Add each trainer as GUEST member through the collaboration service, which lets this
        service (its own token) grant a course's trainers on its instances; returns the refusals."""
        refused = []
        url = f"{self.collab_url}/api/instances/{user}/{course.server_name}/members"
        for trainer in course.trainers:
            if trainer == user:
                continue
            try:
                await self.hub.collab_call("POST", url, {"member": trainer, "role": GUEST})
            except HubError as e:
                if e.status != 409:  # 409: already a member
                    refused.append(f"{trainer}: {e.message[:200]}")
        return refused

    # -- the end of a course -------------------------------------------------------------------------
    async def sweep(self) -> list[str]:
        """Delete the guest accounts (and their archives) of courses whose download window closed,
        once their servers are gone (the visa-ops sweep deletes the instances); drain ended pools, and
        put again a running course's pool the hub forgot (it restarted: it then takes back the
        servers its previous run built for the pool)."""
        removed = []
        now = self.clock()
        await self._keep_pools(now)
        for course_id, user in await self.store.expired_guests(now):
            with self.hub.fresh():
                model = await self.hub.user(user)
            if model is not None and model.get("servers"):
                continue  # its instance is still there: next sweep
            for archive in await self._archives(user):
                await self.hub.delete_archive(user, archive)
            if model is not None:
                await self.hub.delete_user(user)
            await self.store.mark_removed(course_id, user)
            log.info("Course %s ended: guest account %s deleted", course_id, user)
            removed.append(user)
        return removed

    async def _keep_pools(self, now: datetime) -> None:
        for course in await self.store.all_courses():
            row = await self.store.course_row(course.id)
            if not row["pool"]:
                continue
            if course.ended(now):
                await self.hub.delete_pool(course.id)
                await self.store.mark_started(course.id, row["started_by"], None, "The course ended: pool drained.")
            elif await self.hub.get_pool(course.id) is None:
                pool, note = await self._put_pool(course)
                log.info("Course %s: the hub had forgotten the warm pool (a restart); put again: %s", course.id, note)
                if pool is None:
                    await self.store.mark_started(course.id, row["started_by"], None, note)

    async def _archives(self, user: str) -> list[str]:
        if not self.archive_dir:
            return []
        from visa_spawner.archives import list_archives

        found = await asyncio.get_running_loop().run_in_executor(None, list_archives, self.archive_dir, user)
        return [a.id for a in found]


def _int(value: Any, name: str, default: int = 0) -> int:
    if value in (None, ""):
        return default
    try:
        return int(str(value).strip())
    except ValueError:
        raise TrainingError(400, f"{name} must be a whole number.") from None

