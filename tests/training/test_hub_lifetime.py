"""A course instance ends at its `download_until` (visa-ops lifecycle rules), warned and deleted as usual."""
from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest

from tests.ops.conftest import T0
from visa_ops.inventory import Instance, instance_from_row
from visa_ops.policy import LIFETIME, LifecyclePolicy

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
