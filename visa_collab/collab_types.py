"""Small shared types of the collaboration service: errors, instances, rooms, code hashing."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .roles import Role

CODE_PREFIX = "vi_"


class CollabError(Exception):
    """A refusal a person can act on: an HTTP status and a plain message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Instance:
    owner: str
    server: str
    display_name: str
    proposal: str | None
    ready: bool
    url: str
    course_trainers: tuple[str, ...] = ()  # a course instance's trainers, confirmed while it ran

    @property
    def key(self) -> tuple[str, str]:
        return (self.owner, self.server)

    def model(self) -> dict:
        return {"owner": self.owner, "server": self.server, "display_name": self.display_name,
                "proposal": self.proposal, "ready": self.ready, "url": self.url}


@dataclass
class Room:
    """Live state of one instance, in memory: what its Jupyter server last reported, and when the
    owner's own pages last asked this service about it."""

    version: int = 0
    sessions: list[dict] = field(default_factory=list)  # {user, role, channel, since}: informational
    reported_at: float = 0.0  # monotonic
    owner_seen: float | None = None  # monotonic: the owner's last poll (signed in here as the owner)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def bump(self) -> None:
        self.version += 1
        self.changed.set()
        self.changed = asyncio.Event()


def hash_code(code: str) -> str:
    return hashlib.sha256(code.encode("utf8", "replace")).hexdigest()


def _rank(role: Role) -> int:
    return {Role.GUEST: 1, Role.USER: 2, Role.SUPPORT: 3}.get(role, 0)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt
