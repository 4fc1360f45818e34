"""visa-training's own tables (SQLAlchemy Core, Alembic): courses, participants, seats, broadcasts.

SQLite (0600, in the hub's state directory) by default, PostgreSQL with ``VISA_TRAINING_DB_URL``.
Every call runs in an executor (`visa_ops.store.in_executor`): a query may be a network round
trip, and the service's loop keeps serving the course pages and the hub's internal calls.

Seat links are never stored: a seat keeps a random nonce and the SHA-256 of its token; the token
is an HMAC of the nonce under the service's seat secret, so the trainer's page can show the link
again while a copy of the database alone redeems nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text, and_, select, update
from sqlalchemy.engine import Engine

from visa_collab.db import connect
from visa_collab.migrate import upgrade
from visa_ops.store import in_executor

from .course import Course, iso

metadata = MetaData()
NAME = String(255)

courses = Table(
    "visa_training_courses", metadata,
    Column("id", String(24), primary_key=True),
    Column("title", String(200), nullable=False),
    Column("trainers", Text, nullable=False),  # JSON list
    Column("starts_at", DateTime, nullable=False),  # naive UTC, as stored
    Column("ends_at", DateTime, nullable=False),
    Column("plan", NAME, nullable=False),
    Column("proposal", String(64)),
    Column("materials", Text, nullable=False),  # absolute host path, "" = none
    Column("guest_seats", Integer, nullable=False),
    Column("download_days", Integer, nullable=False),
    Column("source", String(8), nullable=False),  # yaml | page
    Column("created_by", NAME, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("started_at", DateTime),  # "Start the class"
    Column("started_by", NAME),
    Column("pool", String(24)),  # the warm pool's name when one was filled, else NULL
    Column("start_note", Text),  # what the page says about the start (e.g. no warm pool here)
)

participants = Table(
    "visa_training_participants", metadata,
    Column("course", String(24), primary_key=True),
    Column("user", NAME, primary_key=True),
    Column("kind", String(8), nullable=False),  # facility | guest
    Column("source", String(8), nullable=False),  # yaml | page | seat
    Column("display_name", NAME),
    Column("added_at", DateTime, nullable=False),
    Column("state", String(16), nullable=False, default=""),  # "" | creating | shared | running | failed
    Column("detail", Text),  # the last step's message, shown per participant
    Column("removed_at", DateTime),  # a guest account deleted after download_until
)

seats = Table(
    "visa_training_seats", metadata,
    Column("id", Integer, primary_key=True),
    Column("course", String(24), nullable=False, index=True),
    Column("nonce", String(64), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime, nullable=False),
    Column("used_at", DateTime),
    Column("used_by", NAME),
)

broadcasts = Table(
    "visa_training_broadcasts", metadata,
    Column("id", Integer, primary_key=True),  # rows are never deleted: an id is never reused
    Column("course", String(24), nullable=False, index=True),
    Column("text", Text, nullable=False),
    Column("sent_by", NAME, nullable=False),
    Column("sent_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),  # the course end, or sooner when the trainer says
    Column("cleared_at", DateTime),  # replaced or cleared
)

ALEMBIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "alembic")
VERSION_TABLE = "visa_training_alembic_version"
FACILITY, GUEST = "facility", "guest"


def utcnow() -> datetime:
    return datetime.now(UTC)


def _naive(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(tzinfo=None)


def _aware(dt: datetime | None) -> datetime | None:
    return dt.replace(tzinfo=UTC) if dt is not None else None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def seat_token(secret: bytes, nonce: str) -> str:
    """The seat's link token: 32 bytes, URL-safe (HMAC-SHA256 of its nonce under the seat secret)."""
    return base64.urlsafe_b64encode(hmac.new(secret, nonce.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()


class SeatError(Exception):
    """A seat that cannot be redeemed; `status` 404 (unknown) or 410 (used, or the course ended)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class Store:
    """The service's records. Methods are awaitable (executor); `.sync` variants for threads."""

    def __init__(self, engine: Engine, seat_secret: bytes, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine, self.seat_secret, self.clock = engine, seat_secret, clock

    @classmethod
    def from_url(cls, url: str, seat_secret: bytes, clock: Callable[[], datetime] = utcnow) -> Store:
        engine = connect(url)
        migrate(engine)
        return cls(engine, seat_secret, clock)

    # -- courses -------------------------------------------------------------------------------
    def _course(self, conn, row) -> Course:
        people = conn.execute(select(participants.c.user).where(
            participants.c.course == row.id, participants.c.removed_at.is_(None)).order_by(
            participants.c.added_at, participants.c.user)).scalars().all()
        return Course(id=row.id, title=row.title, trainers=tuple(json.loads(row.trainers)),
                      starts_at=_aware(row.starts_at), ends_at=_aware(row.ends_at), plan=row.plan,
                      proposal=row.proposal, materials=row.materials, participants=tuple(people),
                      guest_seats=row.guest_seats, download_days=row.download_days)

    def course_sync(self, course_id: str) -> Course | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(courses).where(courses.c.id == course_id)).first()
            return self._course(conn, row) if row else None

    course = in_executor(course_sync)

    def course_row_sync(self, course_id: str) -> dict | None:
        """The course's bookkeeping (source, started_at, pool, start_note)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(courses).where(courses.c.id == course_id)).first()
        return dict(row._mapping) if row else None

    course_row = in_executor(course_row_sync)

    def courses_sync(self) -> list[Course]:
        with self.engine.connect() as conn:
            return [self._course(conn, r) for r in conn.execute(select(courses).order_by(courses.c.starts_at))]

    all_courses = in_executor(courses_sync)

    def save_course_sync(self, course: Course, *, source: str, actor: str, create: bool = False) -> None:
        """Insert or update the course and add its listed participants (never removing others: the
        YAML wins for what it names). `create`: refuse an id already taken (the page's form)."""
        now = _naive(self.clock())
        values = {"title": course.title, "trainers": json.dumps(list(course.trainers)),
                  "starts_at": _naive(course.starts_at), "ends_at": _naive(course.ends_at), "plan": course.plan,
                  "proposal": course.proposal, "materials": course.materials, "guest_seats": course.guest_seats,
                  "download_days": course.download_days}
        with self.engine.begin() as conn:
            exists = conn.execute(select(courses.c.id).where(courses.c.id == course.id)).first()
            if exists and create:
                raise ValueError(f"A course with the id {course.id!r} exists already.")
            if exists:
                conn.execute(courses.update().where(courses.c.id == course.id).values(**values))
            else:
                conn.execute(courses.insert().values(id=course.id, source=source, created_by=actor,
                                                     created_at=now, **values))
            for user in course.participants:
                self._add_participant(conn, course.id, user, FACILITY, source)
            have = conn.execute(select(seats.c.id).where(seats.c.course == course.id)).all()
            for _ in range(course.guest_seats - len(have)):
                self._new_seat(conn, course.id)

    save_course = in_executor(save_course_sync)

    def mark_started_sync(self, course_id: str, actor: str, pool: str | None, note: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(courses.update().where(courses.c.id == course_id).values(
                started_at=_naive(self.clock()), started_by=actor, pool=pool, start_note=note))

    mark_started = in_executor(mark_started_sync)

    # -- participants --------------------------------------------------------------------------
    def _add_participant(self, conn, course_id: str, user: str, kind: str, source: str,
                         display_name: str | None = None) -> bool:
        where = and_(participants.c.course == course_id, participants.c.user == user)
        if conn.execute(select(participants.c.user).where(where)).first():
            return False
        conn.execute(participants.insert().values(course=course_id, user=user, kind=kind, source=source,
                                                  display_name=display_name, added_at=_naive(self.clock()),
                                                  state=""))
        return True

    def add_participants_sync(self, course_id: str, users: list[str], source: str = "page") -> list[str]:
        """Add facility accounts; returns those that were new."""
        with self.engine.begin() as conn:
            return [u for u in users if self._add_participant(conn, course_id, u, FACILITY, source)]

    add_participants = in_executor(add_participants_sync)

    def participants_sync(self, course_id: str, include_removed: bool = False) -> list[dict]:
        q = select(participants).where(participants.c.course == course_id)
        if not include_removed:
            q = q.where(participants.c.removed_at.is_(None))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q.order_by(participants.c.added_at, participants.c.user))]

    participants = in_executor(participants_sync)

    def participant_sync(self, course_id: str, user: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(participants).where(
                participants.c.course == course_id, participants.c.user == user,
                participants.c.removed_at.is_(None))).first()
        return dict(row._mapping) if row else None

    participant = in_executor(participant_sync)

    def courses_of_sync(self, user: str) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(participants.c.course).where(
                participants.c.user == user, participants.c.removed_at.is_(None))).scalars())

    courses_of = in_executor(courses_of_sync)

    def set_progress_sync(self, course_id: str, user: str, state: str, detail: str = "") -> None:
        with self.engine.begin() as conn:
            conn.execute(participants.update().where(participants.c.course == course_id,
                                                     participants.c.user == user).values(state=state, detail=detail))

    set_progress = in_executor(set_progress_sync)

    def mark_removed_sync(self, course_id: str, user: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(participants.update().where(participants.c.course == course_id,
                                                     participants.c.user == user).values(
                removed_at=_naive(self.clock())))

    mark_removed = in_executor(mark_removed_sync)

    # -- seats -----------------------------------------------------------------------------------
    def _new_seat(self, conn, course_id: str) -> None:
        nonce = secrets.token_hex(16)
        conn.execute(seats.insert().values(course=course_id, nonce=nonce, created_at=_naive(self.clock()),
                                           token_hash=token_hash(seat_token(self.seat_secret, nonce))))

    def add_seats_sync(self, course_id: str, count: int) -> None:
        with self.engine.begin() as conn:
            for _ in range(count):
                self._new_seat(conn, course_id)
            total = len(conn.execute(select(seats.c.id).where(seats.c.course == course_id)).all())
            conn.execute(courses.update().where(courses.c.id == course_id).values(guest_seats=total))

    add_seats = in_executor(add_seats_sync)

    def seats_sync(self, course_id: str) -> list[dict]:
        """Every seat with its token (recomputed) and state: free / used / expired."""
        course = self.course_sync(course_id)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(
                select(seats).where(seats.c.course == course_id).order_by(seats.c.id))]
        now = self.clock()
        for r in rows:
            r["token"] = seat_token(self.seat_secret, r.pop("nonce"))
            r["state"] = "used" if r["used_at"] else ("expired" if course and course.ended(now) else "free")
        return rows

    seats = in_executor(seats_sync)

    def redeem_sync(self, token: str) -> tuple[Course, str, int]:
        """Mark the seat used and add the new guest as a participant; returns (course, user name,
        seat number). The conditional UPDATE comes first, so the transaction holds the write lock
        (SQLite) or the row lock (PostgreSQL) before anything is read: of two concurrent redeems
        one wins, the other is told the link was used. A refusal after it rolls the mark back."""
        digest = token_hash(token)
        now = self.clock()
        with self.engine.begin() as conn:
            won = conn.execute(update(seats).where(seats.c.token_hash == digest, seats.c.used_at.is_(None))
                               .values(used_at=_naive(now))).rowcount
            row = conn.execute(select(seats).where(seats.c.token_hash == digest)).first()
            if row is None:
                raise SeatError(404, "This sign-up link is not known. Ask the trainer for a new one.")
            if won != 1:
                raise SeatError(410, "This sign-up link was already used.")
            course = self._course(conn, conn.execute(select(courses).where(courses.c.id == row.course)).first())
            if course.ended(now):
                raise SeatError(410, f"This course ended on {course.ends_at:%Y-%m-%d %H:%M} UTC.")
            user = f"{course.id}-guest{row.id}"
            conn.execute(update(seats).where(seats.c.id == row.id).values(used_by=user))
            number = 1 + len(conn.execute(select(seats.c.id).where(seats.c.course == course.id,
                                                                   seats.c.id < row.id)).all())
            self._add_participant(conn, course.id, user, GUEST, "seat", f"Guest {number}")
        return course, user, number

    redeem = in_executor(redeem_sync)

    # -- broadcasts ----------------------------------------------------------------------------
    def set_broadcast_sync(self, course_id: str, text: str, by: str, expires_at: datetime) -> dict | None:
        """Replace the course's message (empty `text`: clear it); the new message's model, or None."""
        now = _naive(self.clock())
        with self.engine.begin() as conn:
            conn.execute(broadcasts.update().where(broadcasts.c.course == course_id,
                                                   broadcasts.c.cleared_at.is_(None)).values(cleared_at=now))
            if not text:
                return None
            conn.execute(broadcasts.insert().values(course=course_id, text=text, sent_by=by, sent_at=now,
                                                    expires_at=_naive(expires_at)))
        return self.broadcast_sync(course_id)

    set_broadcast = in_executor(set_broadcast_sync)

    def broadcast_sync(self, course_id: str) -> dict | None:
        """The course's current message `{"id", "text", "from", "at", "expires_at"}`, None once expired."""
        with self.engine.connect() as conn:
            row = conn.execute(select(broadcasts).where(
                broadcasts.c.course == course_id, broadcasts.c.cleared_at.is_(None),
                broadcasts.c.expires_at > _naive(self.clock())).order_by(broadcasts.c.id.desc()).limit(1)).first()
        if row is None:
            return None
        return {"id": row.id, "text": row.text, "from": row.sent_by, "at": iso(_aware(row.sent_at)),
                "expires_at": iso(_aware(row.expires_at))}

    broadcast = in_executor(broadcast_sync)

    def expired_guests_sync(self, now: datetime) -> list[tuple[str, str]]:
        """(course, user) of guest participants whose course's download window has closed."""
        cutoff = _naive(now)
        with self.engine.connect() as conn:
            rows = conn.execute(select(participants.c.course, participants.c.user, courses.c.ends_at,
                                       courses.c.download_days).join(courses, courses.c.id == participants.c.course)
                                .where(participants.c.kind == GUEST, participants.c.removed_at.is_(None))).all()
        return [(r.course, r.user) for r in rows if r.ends_at + timedelta(days=r.download_days) <= cutoff]

    expired_guests = in_executor(expired_guests_sync)


def migrate(engine: Engine) -> str | None:
    """Bring the database to the newest Alembic revision (`visa_collab.migrate.upgrade`)."""
    return upgrade(engine, ALEMBIC_DIR, VERSION_TABLE, name="visa-training")
