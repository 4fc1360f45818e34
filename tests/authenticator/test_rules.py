"""The entitlement rules, as tables: who may create an instance for what, and why not."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from visa_authenticator import rules
from visa_authenticator.catalogue import Experiment, Person, Proposal, Role, RoleGrant

TODAY = date(2026, 11, 24)
NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
PAST, FUTURE = date(2024, 1, 1), date(2029, 1, 1)

# A: the person's own proposal (if `member`), embargoed, on D11
# EMB: somebody else's embargoed proposal on D11 (reachable as D11 scientist only)
# OPEN: somebody else's proposal on IN5 whose embargo ended
PROPOSALS = {
    "A": Proposal("A", "Own proposal", public_date=FUTURE),
    "EMB": Proposal("EMB", "Colleague's proposal", public_date=FUTURE),
    "OPEN": Proposal("OPEN", "Old proposal", public_date=PAST),
}


def _grants(*roles: str, expired: tuple[str, ...] = ()) -> tuple[RoleGrant, ...]:
    return tuple(RoleGrant(Role(r)) for r in roles) + tuple(
        RoleGrant(Role(r), TODAY - timedelta(days=1)) for r in expired
    )


def facts(
    *roles: str,
    member: bool = True,
    scientist: bool = False,
    quota: int | None = None,
    expired: tuple[str, ...] = (),
    exp_dates: tuple[date, date] = (TODAY - timedelta(days=30), TODAY - timedelta(days=28)),
) -> rules.Facts:
    """One person seen through the rules' eyes, in the small facility above."""
    person = Person("pat", "Pat Doe", "pat@example.org", _grants(*roles, expired=expired), quota)
    team = ("pat",) if member else ("someone",)
    experiments = (
        Experiment("e-a", "A", "D11", *exp_dates, team=team),
        Experiment("e-emb", "EMB", "D11", TODAY, TODAY, team=("someone",)),
        Experiment("e-open", "OPEN", "IN5", PAST, PAST, team=("someone",)),
    )
    reachable = {"OPEN"} | ({"A"} if member else set()) | ({"A", "EMB"} if scientist else set())
    return rules.Facts(
        person=person,
        team_experiments=tuple(e for e in experiments if "pat" in e.team),
        scientist_instruments=("D11",) if scientist else (),
        proposals=tuple(PROPOSALS[p] for p in sorted(reachable)),
        experiments=tuple(e for e in experiments if e.proposal_id in reachable),
    )


CREATE_TABLE = [
    # id, facts, requested proposals, running instances, expected: (allowed, relation or message)
    ("user-own-proposal", facts("USER"), ["A"], 0, (True, {"A": "team"})),
    ("user-not-member", facts("USER", member=False), ["A"], 0, (False, "no access to proposal(s) A")),
    ("user-no-proposal", facts("USER"), [], 0, (False, "Choose at least one proposal")),
    ("user-open-data-only", facts("USER", member=False), ["OPEN"], 0, (True, {"OPEN": "open-data"})),
    ("user-own-plus-open", facts("USER"), ["A", "OPEN"], 1, (True, {"A": "team", "OPEN": "open-data"})),
    ("user-at-quota", facts("USER"), ["A"], 2, (False, "your quota is 2")),
    ("user-pending-approval", facts("USER", quota=0), ["A"], 0, (False, "awaiting approval")),
    ("user-personal-quota", facts("USER", quota=3), ["A"], 2, (True, {"A": "team"})),
    ("user-colleague-embargoed", facts("USER"), ["A", "EMB"], 0, (False, "no access to proposal(s) EMB")),
    ("user-listed-scientist-no-role", facts("USER", scientist=True), ["EMB"], 0, (False, "EMB")),
    ("guest-open-data", facts("GUEST", member=False), ["OPEN"], 0, (True, {"OPEN": "open-data"})),
    ("guest-no-proposal", facts("GUEST", member=False), [], 0, (False, "Choose at least one proposal")),
    ("staff-no-proposal", facts("STAFF", member=False), [], 0, (True, {})),
    ("staff-at-quota", facts("STAFF", member=False), [], 2, (False, "your quota is 2")),
    ("staff-scientist", facts("STAFF", member=False, scientist=True), ["EMB"], 0, (True, {"EMB": "instrument-scientist"})),
    ("instrument-scientist", facts("INSTRUMENT_SCIENTIST", member=False, scientist=True), ["EMB"], 0, (True, {"EMB": "instrument-scientist"})),
    ("scientist-grant-expired", facts("USER", member=False, scientist=True, expired=("INSTRUMENT_SCIENTIST",)), ["EMB"], 0, (False, "EMB")),
    ("scientist-and-member", facts("INSTRUMENT_SCIENTIST", scientist=True), ["A"], 0, (True, {"A": "team"})),
    ("it-support-needs-proposal", facts("IT_SUPPORT", member=False), [], 0, (False, "Choose at least one proposal")),
    ("admin-unlimited", facts("ADMIN", member=False), [], 50, (True, {})),
    ("admin-not-scientist", facts("ADMIN", member=False), ["EMB"], 0, (False, "EMB")),
    ("unknown-proposal", facts("ADMIN"), ["NOPE"], 0, (False, "no access to proposal(s) NOPE")),
]  # fmt: skip


@pytest.mark.parametrize(
    "f, wanted, running, expected", [row[1:] for row in CREATE_TABLE], ids=[r[0] for r in CREATE_TABLE]
)
def test_may_create(f: rules.Facts, wanted: list[str], running: int, expected: tuple) -> None:
    ent = rules.entitlements(f, NOW, rules.Policy())
    decision = rules.check_create(ent, wanted, running)
    allowed, detail = expected
    assert decision.allowed is allowed, decision.message
    if allowed:
        assert dict(decision.relations) == detail
        assert decision.message == ""
    else:
        assert detail in decision.message
        assert decision.relations == ()


def test_open_data_alone_refused_when_own_proposal_required() -> None:
    ent = rules.entitlements(facts("USER", member=False), NOW, rules.Policy())
    decision = rules.check_create(ent, ["OPEN"], 0, require_own_proposal=True)
    assert not decision.allowed and "open data alone" in decision.message
    assert rules.check_create(
        rules.entitlements(facts("USER"), NOW, rules.Policy()), ["A", "OPEN"], 0, require_own_proposal=True
    ).allowed


QUOTA_TABLE = [
    ("default", ("USER",), None, {}, 2),
    ("admin-unlimited", ("USER", "ADMIN"), None, {}, -1),
    ("per-role", ("USER", "STAFF"), None, {"STAFF": 5}, 5),
    ("most-generous-role", ("GUEST", "STAFF"), None, {"GUEST": 1, "STAFF": 4}, 4),
    ("role-below-default", ("GUEST",), None, {"GUEST": 1}, 1),
    ("person-override", ("ADMIN",), 3, {}, 3),
    ("pending-approval", ("STAFF",), 0, {"STAFF": 5}, 0),
    ("person-unlimited", ("USER",), -1, {}, -1),
    ("no-active-role", (), None, {}, 0),
]  # fmt: skip


@pytest.mark.parametrize("roles, override, role_quotas, expected", [r[1:] for r in QUOTA_TABLE], ids=[r[0] for r in QUOTA_TABLE])
def test_quota(roles: tuple[str, ...], override: int | None, role_quotas: dict, expected: int) -> None:
    person = Person("pat", "Pat", roles=_grants(*roles), quota=override)
    policy = rules.Policy(role_quotas={"ADMIN": -1, **role_quotas})
    assert rules.quota(person, list(roles), policy) == expected


ROLE_TABLE = [
    # grants (role, expires), expected active roles, refusal fragment or None
    ("no-expiry", [("USER", None)], ["USER"], None),
    ("expires-today-still-valid", [("GUEST", TODAY)], ["GUEST"], None),
    ("expired-yesterday", [("GUEST", TODAY - timedelta(days=1))], [], "expired on 2026-11-23"),
    ("one-of-two-expired", [("USER", None), ("ADMIN", date(2026, 1, 1))], ["USER"], None),
    ("latest-expiry-reported", [("GUEST", date(2026, 1, 1)), ("USER", date(2026, 6, 30))], [], "expired on 2026-06-30"),
    ("no-roles-at-all", [], [], "no role yet"),
    ("order-is-fixed", [("ADMIN", None), ("USER", None), ("STAFF", None)], ["USER", "STAFF", "ADMIN"], None),
]  # fmt: skip


@pytest.mark.parametrize("grants, active, refused", [r[1:] for r in ROLE_TABLE], ids=[r[0] for r in ROLE_TABLE])
def test_roles_and_refusal(grants: list, active: list[str], refused: str | None) -> None:
    person = Person("pat", "Pat", roles=tuple(RoleGrant(Role(r), e) for r, e in grants))
    assert rules.active_roles(person, TODAY) == active
    why = rules.refusal(person, TODAY)
    assert (why is None) if refused is None else (refused in why)


def _days(a: int, b: int) -> tuple[date, date]:
    return TODAY + timedelta(days=a), TODAY + timedelta(days=b)


CONTROL_TABLE = [
    # roles, member, experiment (start, end) relative to today, expected
    ("running", ("USER", "INSTRUMENT_CONTROL"), True, _days(-2, 2), ["A"]),
    ("7-days-before-start", ("USER", "INSTRUMENT_CONTROL"), True, _days(7, 9), ["A"]),
    ("8-days-before-start", ("USER", "INSTRUMENT_CONTROL"), True, _days(8, 9), []),
    ("7-days-after-end", ("USER", "INSTRUMENT_CONTROL"), True, _days(-9, -7), ["A"]),
    ("8-days-after-end", ("USER", "INSTRUMENT_CONTROL"), True, _days(-9, -8), []),
    ("without-role", ("USER",), True, _days(-2, 2), []),
    ("not-in-team", ("INSTRUMENT_CONTROL",), False, _days(-2, 2), []),
]  # fmt: skip


@pytest.mark.parametrize("roles, member, dates, expected", [r[1:] for r in CONTROL_TABLE], ids=[r[0] for r in CONTROL_TABLE])
def test_instrument_control(roles: tuple[str, ...], member: bool, dates: tuple[date, date], expected: list[str]) -> None:
    ent = rules.entitlements(facts(*roles, member=member, exp_dates=dates), NOW, rules.Policy())
    assert ent["instrument_control"] == expected


def test_entitlements_contract_shape() -> None:
    """Exactly the keys the spawner reads, JSON-serialisable, strongest relation first."""
    f = facts("USER", "INSTRUMENT_SCIENTIST", scientist=True)
    ent = rules.entitlements(f, NOW, rules.Policy())
    assert json.loads(json.dumps(ent)) == ent
    assert set(ent) == {"person", "roles", "role_expires", "admin", "quota", "proposals", "instrument_control",
                        "computed_at"}
    assert ent["person"] == {"id": "pat", "name": "Pat Doe", "email": "pat@example.org"}
    assert ent["admin"] is False and ent["quota"] == 2
    assert ent["computed_at"] == "2026-11-24T12:00:00+00:00"
    assert ent["proposals"] == [
        {"id": "A", "title": "Own proposal", "instruments": ["D11"], "open_data": False, "relation": "team"},
        {"id": "EMB", "title": "Colleague's proposal", "instruments": ["D11"], "open_data": False, "relation": "instrument-scientist"},
        {"id": "OPEN", "title": "Old proposal", "instruments": ["IN5"], "open_data": True, "relation": "open-data"},
    ]  # fmt: skip


def test_own_proposal_past_embargo_is_team_and_open() -> None:
    f = facts("USER")
    f = rules.Facts(
        f.person, f.team_experiments, (), (Proposal("A", "Own", public_date=PAST),), f.team_experiments
    )
    [p] = rules.entitlements(f, NOW, rules.Policy())["proposals"]
    assert (p["relation"], p["open_data"]) == ("team", True)


GROUP_TABLE = [
    ("user", facts("USER"), ["proposal:A", "role:user"]),
    ("scientist", facts("STAFF", "INSTRUMENT_SCIENTIST", member=False, scientist=True),
     ["instrument:D11", "proposal:A", "proposal:EMB", "role:instrument_scientist", "role:staff"]),
    ("listed-but-no-role", facts("USER", scientist=True), ["proposal:A", "role:user"]),
    ("open-data-gives-no-group", facts("GUEST", member=False), ["role:guest"]),
    ("admin", facts("ADMIN", member=False), ["role:admin"]),
]  # fmt: skip


@pytest.mark.parametrize("f, expected", [r[1:] for r in GROUP_TABLE], ids=[r[0] for r in GROUP_TABLE])
def test_groups(f: rules.Facts, expected: list[str]) -> None:
    ent = rules.entitlements(f, NOW, rules.Policy())
    assert rules.groups(f, ent) == expected


def test_role_expires_names_active_roles_that_end_with_their_last_day() -> None:
    """What the admin console shows as a guest's expiry; a role that never ends or has ended is absent."""
    person = Person("g", "Guest", roles=(RoleGrant(Role.GUEST, date(2026, 12, 5)), RoleGrant(Role.USER),
                                         RoleGrant(Role.STAFF, date(2026, 1, 1))))
    assert rules.role_expiry(person, date(2026, 12, 3)) == {"GUEST": "2026-12-05"}
    assert rules.role_expiry(person, date(2026, 12, 6)) == {}
