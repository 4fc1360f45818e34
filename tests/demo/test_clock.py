"""The demo's facility date: pinned day, running time of day; empty means the real date."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from visa_demo.clock import DEMO_TODAY, pinned_clock


def test_pinned_clock_keeps_the_day_and_runs_the_time() -> None:
    now = pinned_clock("2026-11-24")()
    real = datetime.now(UTC)
    assert now.date() == date(2026, 11, 24)
    assert now.tzinfo is not None
    assert abs(now.replace(year=real.year, month=real.month, day=real.day) - real) < timedelta(seconds=5)


def test_empty_is_the_real_clock_and_default_is_the_catalogue_day() -> None:
    assert abs(pinned_clock("")() - datetime.now(UTC)) < timedelta(seconds=5)
    assert DEMO_TODAY == "2026-11-24"


def test_bad_date_is_refused_with_its_value() -> None:
    with pytest.raises(ValueError, match="2026-13-01"):
        pinned_clock("2026-13-01")
