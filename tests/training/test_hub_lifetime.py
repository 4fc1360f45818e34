"""A course instance ends at its `download_until` (visa-ops lifecycle rules), warned and deleted as usual."""
from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest

from tests.ops.conftest import T0, DateClock
from visa_ops.inventory import Instance, instance_from_row
from visa_ops.policy import INACTIVITY, LIFETIME, LifecyclePolicy

UNTIL = T0 + timedelta(days=3)


def course_instance(ends_at=UNTIL, roles=("GUEST",)) -> Instance:
    return Instance(owner="guest-1", server="course-python-neutron", plan="sandbox-small", owner_roles=roles,
                    created=T0, last_activity=T0, state="running", ends_at=ends_at)


@pytest.mark.parametrize("roles, record, ends_at, expected", [
    (("GUEST",), {}, UNTIL, UNTIL),  # shorter than the role's 14 days
    (("STAFF",), {}, T0 + timedelta(days=90), T0 + timedelta(days=90)),  # longer than the role's 60
    (("USER",), {"extra_days": 2}, UNTIL, UNTIL + timedelta(days=2)),  # an accepted extension still counts
    (("USER",), {"unlimited": True}, UNTIL, None),  # an admin's "unlimited" wins
    (("USER",), {}, None, T0 + timedelta(days=14)),  # an ordinary instance: the role's lifetime
])
def test_the_course_end_is_the_lifetime(roles, record, ends_at, expected):
    assert LifecyclePolicy().expires_at(course_instance(ends_at, roles), record) == expected


def test_warned_then_deleted_at_the_end():
    p = LifecyclePolicy()
    before = UNTIL - timedelta(hours=47)
    verdict = p.decide(Instance(**{**course_instance().__dict__, "last_activity": before}), {}, before)
    assert verdict.warn_now == (LIFETIME, UNTIL) and verdict.delete is None
    warned = {"warned_lifetime_for": UNTIL, "warned_lifetime_at": before}
    after = UNTIL + timedelta(minutes=1)
    assert p.decide(Instance(**{**course_instance().__dict__, "last_activity": after}), warned, after).delete == LIFETIME


@pytest.mark.parametrize("options, ends_at", [
    ({"course": "c", "download_until": "2026-03-10T12:00:00+00:00"}, "2026-03-10 12:00:00"),
    ({"course": "c", "download_until": "2026-03-10T13:00:00+01:00"}, "2026-03-10 12:00:00"),  # to naive UTC
    ({"course": "c", "download_until": "soon"}, None),
    ({"plan": "sandbox-small"}, None),
])
def test_the_end_is_read_from_user_options(options, ends_at):
    row = SimpleNamespace(owner="u", name="course-c", display_name="", user_options=options, state={},
                          server_id=None, started=None, last_activity=None)
    got = instance_from_row(row, ("GUEST",), {}).ends_at
    assert (str(got) if got else None) == ends_at


COURSE_END = T0 + timedelta(days=10)  # a two-week school: longer than USER's 4 days of inactivity


def long_course(last_activity=T0, course_ends_at=COURSE_END) -> Instance:
    return Instance(owner="paul", server="course-python-neutron", plan="sandbox-small", owner_roles=("USER",),
                    created=T0, last_activity=last_activity, state="running",
                    ends_at=COURSE_END + timedelta(days=7), course_ends_at=course_ends_at)


def test_no_inactivity_rule_while_the_course_runs_then_as_usual():
    clock = DateClock()
    p = LifecyclePolicy(clock=clock)
    clock.advance(days=6)  # untouched for 6 days: an ordinary instance is past its 4 days (warned 24 h before)
    warned_idle = {"warned_inactivity_for": T0 + timedelta(days=4), "warned_inactivity_at": T0 + timedelta(days=3)}
    assert p.decide(long_course(course_ends_at=None), warned_idle).delete == INACTIVITY
    during = p.decide(long_course(), warned_idle)
    assert (during.warning, during.warn_now, during.delete) == (None, None, None)
    assert during.inactivity_deadline == COURSE_END + timedelta(days=4)
    clock.advance(days=7)  # 1 day before the inactivity deadline, counted from the course end
    after = p.decide(long_course())
    assert after.warn_now == (INACTIVITY, COURSE_END + timedelta(days=4)) and after.delete is None
    warned = {"warned_inactivity_for": COURSE_END + timedelta(days=4), "warned_inactivity_at": clock()}
    clock.advance(days=1, minutes=1)
    assert p.decide(long_course(), warned).delete == INACTIVITY


def test_the_lifetime_still_ends_a_course_instance_used_every_day():
    p = LifecyclePolicy()
    end = COURSE_END + timedelta(days=7)
    warned = {"warned_lifetime_for": end, "warned_lifetime_at": end - timedelta(days=2)}
    at = end + timedelta(minutes=1)
    assert p.decide(long_course(last_activity=at), warned, at).delete == LIFETIME


@pytest.mark.parametrize("options, course_ends_at", [
    ({"course": "c", "course_ends_at": "2026-03-09T23:59:59Z"}, "2026-03-09 23:59:59"),
    ({"course_ends_at": "2026-03-09T23:59:59Z"}, None),  # not a course instance: the usual rules
    ({"course": "c"}, None),  # not confirmed by the training service: the usual rules
])
def test_the_course_end_is_read_from_user_options(options, course_ends_at):
    row = SimpleNamespace(owner="u", name="course-c", display_name="", user_options=options, state={},
                          server_id=None, started=None, last_activity=None)
    got = instance_from_row(row, ("USER",), {}).course_ends_at
    assert (str(got) if got else None) == course_ends_at
