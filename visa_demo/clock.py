"""The demo facility's date: its catalogue's schedule is written around one day.

The demo catalogue (hub_config/demo/catalogue.yaml) has an experiment in progress on D11, one next
month on IN5 and a GUEST whose account ends soon, all relative to 2026-11-24. Pinning the date the
hub's authenticator (and the demo instruments) see keeps the demo showing the same thing on any real
day, while the time of day still runs (sessions, lifetimes and warnings use the real clock).
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

DEMO_TODAY = "2026-11-24"


def pinned_clock(today: str) -> Callable[[], datetime]:
    """A timezone-aware clock whose date is `today` (YYYY-MM-DD); empty: the real clock."""
    if not today:
        return lambda: datetime.now(UTC)
    try:
        day = date.fromisoformat(today)
    except ValueError as e:  # stops the hub at start, saying which value
        raise ValueError(f"VISA_DEMO_TODAY={today!r} is not a date YYYY-MM-DD: {e}") from None

    def now() -> datetime:
        return datetime.now(UTC).replace(year=day.year, month=day.month, day=day.day)

    return now
