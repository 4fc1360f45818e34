"""Every facility role × proposal membership × what is asked for (own, open data, someone else's,
nothing) × quota state × VISA's strict rule → may create or not, and the message shown.

tests/authenticator/test_rules.py holds hand-picked rows with their reasons; this is the full
cross product, checked against the rules as docs/catalogue.md states them (the first failing
check wins: quota, then access to each proposal, then "attach a proposal").
"""
from __future__ import annotations

import itertools

import pytest

from tests.authenticator.test_rules import NOW, facts
from visa_authenticator import rules
from visa_authenticator.catalogue import Role

ASKS = {"own": ["A"], "open-data": ["OPEN"], "own+open": ["A", "OPEN"], "other-embargoed": ["EMB"], "nothing": []}
QUOTAS = {  # person quota, instances already running
    "pending-approval": (0, 0),
    "below-quota": (2, 1),
    "at-quota": (2, 2),
    "unlimited": (-1, 50),
}
STAFF_LIKE = {"STAFF", "ADMIN"}


def expected(role: str, member: bool, ask: str, quota: str, strict: bool) -> tuple[bool, str]:
    """The rules as documented, written independently of rules.check_create."""
    if quota == "pending-approval":
        return False, "Your account is awaiting approval: you cannot create instances yet."
    if quota == "at-quota":
        return False, "You already have 2 instance(s) and your quota is 2. Delete one before creating another."
    refused = [p for p in ASKS[ask] if p == "EMB" or (p == "A" and not member)]
    if refused:
        return False, f"You have no access to proposal(s) {', '.join(refused)}."
    if role not in STAFF_LIKE:
        if ask == "nothing":
            return False, "Choose at least one proposal to attach to the instance."
        if strict and ask == "open-data":
            return False, "Attach at least one of your own proposals; open data alone is not enough."
    return True, ""


@pytest.mark.parametrize("role", [r.value for r in Role])
def test_every_combination(role: str) -> None:
    mismatches = []
    for member, ask, quota, strict in itertools.product((True, False), ASKS, QUOTAS, (False, True)):
        person_quota, running = QUOTAS[quota]
        ent = rules.entitlements(facts(role, member=member, quota=person_quota), NOW, rules.Policy())
        got = rules.check_create(ent, ASKS[ask], running, require_own_proposal=strict)
        want = expected(role, member, ask, quota, strict)
        if (got.allowed, got.message) != want:
            mismatches.append(f"{role} member={member} ask={ask} {quota} strict={strict}: "
                              f"got {(got.allowed, got.message)}, want {want}")  # fmt: skip
        if got.allowed:
            relations = dict(got.relations)
            assert relations == {p: ("open-data" if p == "OPEN" else "team") for p in ASKS[ask]}
    assert not mismatches, "\n".join(mismatches)
