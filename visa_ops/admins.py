"""Who is an admin of the service, remembered briefly (its own module: `ops` and `base` both need
it, and neither imports the other at run time)."""

from __future__ import annotations

import time

ADMIN_CACHE_SECONDS = 30.0


class AdminCache:
    """name → (is admin, when asked): the hub is asked at most once per `ttl` per person."""

    def __init__(self, ttl: float = ADMIN_CACHE_SECONDS) -> None:
        self.ttl = ttl
        self._seen: dict[str, tuple[bool, float]] = {}

    def get(self, name: str) -> bool | None:
        hit = self._seen.get(name)
        return hit[0] if hit and time.monotonic() - hit[1] < self.ttl else None

    def put(self, name: str, value: bool) -> bool:
        self._seen[name] = (value, time.monotonic())
        return value
