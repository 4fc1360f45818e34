"""LifecyclePolicy: VISA's defaults, the longest rule wins, warnings once per deadline, notice."""
from __future__ import annotations

from datetime import timedelta

import pytest

from tests.ops.conftest import T0, DateClock
from visa_ops.inventory import Instance
from visa_ops.policy import INACTIVITY, LIFETIME, LifecyclePolicy


def inst(roles=("USER",), plan="small", created=T0, last=None) -> Instance:
    return Instance(owner="alice", server="s1", plan=plan, owner_roles=tuple(roles), created=created,
                    last_activity=last or created, state="running")


@pytest.mark.parametrize("roles, plan, days", [
    (("USER",), "small", 14),
    (("STAFF",), "small", 60),
    (("USER", "STAFF"), "small", 60),  # the longest applicable wins
    ((), "small", 14),  # no known role: the default
    (("GUEST",), "small", 14),
    (("USER",), "long", 30),  # the plan's lifetime beats the role's
    (("STAFF",), "long", 60),  # ... unless the role's is longer
])
def test_lifetime_longest_rule_wins(roles, plan, days):
    p = LifecyclePolicy(plan_rules={"long": {"lifetime_days": 30}})
    assert p.lifetime_days(roles, plan) == days
    assert p.expires_at(inst(roles, plan), {}) == T0 + timedelta(days=days)


@pytest.mark.parametrize("roles, days", [(("USER",), 4), (("STAFF",), 8), (("USER", "STAFF"), 8), ((), 4)])
def test_inactivity_days(roles, days):
    assert LifecyclePolicy().inactivity_days(roles) == days


def test_unlimited_and_extra_days():
    p = LifecyclePolicy()
    assert p.expires_at(inst(), {"unlimited": True}) is None
    assert p.expires_at(inst(), {"extra_days": 5, "created_at": T0}) == T0 + timedelta(days=19)
    # the record's first sight never makes an instance younger than the backend says it is
    assert p.expires_at(inst(), {"created_at": T0 + timedelta(days=3)}) == T0 + timedelta(days=14)


def test_lifetime_warning_window_once_per_deadline_and_notice():
    clock = DateClock()
    p = LifecyclePolicy(clock=clock)
    i = inst(last=None)
    deadline = T0 + timedelta(days=14)
    busy = {"created_at": T0}

    def decide(record, at):
        # real use right now, so only the lifetime rule speaks
        return p.decide(Instance(**{**i.__dict__, "last_activity": at}), record, at)

    assert decide(busy, deadline - timedelta(hours=49)).warn_now is None
    v = decide(busy, deadline - timedelta(hours=48))
    assert v.warn_now == (LIFETIME, deadline) and v.delete is None
    assert v.warning == (LIFETIME, deadline)
    warned = {**busy, "warned_lifetime_for": deadline, "warned_lifetime_at": deadline - timedelta(hours=48)}
    assert decide(warned, deadline - timedelta(hours=47)).warn_now is None  # not twice
    assert decide(warned, deadline - timedelta(seconds=1)).delete is None
    assert decide(warned, deadline).delete == LIFETIME
    # an extension moves the deadline: the old warning no longer counts, a new one is due
    moved = {**warned, "extra_days": 7}
    v = decide(moved, deadline + timedelta(days=5))
    assert v.warn_now == (LIFETIME, deadline + timedelta(days=7)) and v.delete is None


def test_never_deleted_without_notice_after_a_missed_window():
    p = LifecyclePolicy(minimum_notice_hours=24)
    deadline = T0 + timedelta(days=14)
    late = deadline + timedelta(days=2)  # the service was down through the warning window
    busy = Instance(**{**inst().__dict__, "last_activity": late})
    v = p.decide(busy, {"created_at": T0}, late)
    assert v.delete is None and v.warn_now == (LIFETIME, deadline)
    assert v.warning == (LIFETIME, late + timedelta(hours=24))  # the banner shows the real date
    warned = {"created_at": T0, "warned_lifetime_for": deadline, "warned_lifetime_at": late}
    assert p.decide(busy, warned, late + timedelta(hours=23)).delete is None
    assert p.decide(busy, warned, late + timedelta(hours=24)).delete == LIFETIME


def test_inactivity_from_real_use():
    p = LifecyclePolicy(minimum_notice_hours=0)
    last = T0 + timedelta(days=1)
    i = inst(("USER",), last=last)
    deadline = last + timedelta(days=4)
    assert p.decide(i, {"created_at": T0}, deadline - timedelta(hours=25)).warn_now is None
    v = p.decide(i, {"created_at": T0}, deadline - timedelta(hours=24))
    assert v.warn_now == (INACTIVITY, deadline) and v.inactivity_deadline == deadline
    warned = {"created_at": T0, "warned_inactivity_for": deadline, "warned_inactivity_at": deadline - timedelta(hours=24)}
    assert p.decide(i, warned, deadline).delete == INACTIVITY
    # STAFF: 8 days
    assert p.decide(inst(("STAFF",), last=last), {}, deadline).inactivity_deadline == last + timedelta(days=8)
    # use after the warning moves the deadline: no deletion, and the old warning is spent
    used = Instance(**{**i.__dict__, "last_activity": deadline - timedelta(hours=1)})
    assert p.decide(used, warned, deadline).delete is None


@pytest.mark.parametrize("days, comment, message", [
    (None, "x", "whole number"), ("3", "x", "whole number"), (2.5, "x", "whole number"), (True, "x", "whole number"),
    (0, "x", "at least 1"), (-4, "x", "at least 1"), (10**9, "x", "at most 90"), (91, "x", "at most 90"),
    (3, "", "Say why"), (3, "   ", "Say why"), (3, None, "Say why"), (3, 7, "Say why"), (3, "x" * 2001, "too long"),
])
def test_bad_extension_requests(days, comment, message):
    with pytest.raises(ValueError, match=message):
        LifecyclePolicy().check_extension(days, comment)


def test_good_extension_request():
    assert LifecyclePolicy().check_extension(90, "  beamtime moved  ") == (90, "beamtime moved")
