"""Who may do what: pure functions from catalogue facts and a date to entitlements.

No I/O and no clock here, so every rule is a row in a table test. The output of
`entitlements()` is the contract the spawner reads from `auth_state["visa"]`;
`check_create()` is the decision the spawner applies to a creation request, and
reads nothing but that contract.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from .catalogue import Experiment, Person, Proposal, Role

TEAM, SCIENTIST, OPEN_DATA = "team", "instrument-scientist", "open-data"
_RELATION_RANK = {TEAM: 0, SCIENTIST: 1, OPEN_DATA: 2}

# Roles that may create an instance without attaching any proposal (VISA: staff).
NO_PROPOSAL_ROLES = frozenset({Role.STAFF, Role.ADMIN})
# Roles under which being listed as an instrument's scientist gives its proposals.
SCIENTIST_ROLES = frozenset({Role.INSTRUMENT_SCIENTIST, Role.STAFF, Role.ADMIN})


@dataclass(frozen=True)
class Policy:
    """The configurable part of the rules (set from authenticator traits)."""

    default_quota: int = 2
    role_quotas: Mapping[str, int] = field(default_factory=lambda: {"ADMIN": -1})
    instrument_control_days: int = 7


@dataclass(frozen=True)
class Facts:
    """What the catalogue says about one person, gathered before applying the rules.

    `proposals` holds every proposal the person might reach (their teams', their
    instruments', open data) and `experiments` every experiment of those proposals,
    which is how a proposal's instruments are known.
    """

    person: Person
    team_experiments: tuple[Experiment, ...] = ()
    scientist_instruments: tuple[str, ...] = ()
    proposals: tuple[Proposal, ...] = ()
    experiments: tuple[Experiment, ...] = ()


def active_roles(person: Person, today: date) -> list[str]:
    """Roles whose grant has not expired, in the fixed order of `Role`."""
    held = {g.role for g in person.roles if g.active_on(today)}
    return [r.value for r in Role if r in held]


def role_expiry(person: Person, today: date) -> dict[str, str]:
    """Active roles that end, with their last day (ISO): what admins see of a guest's expiry."""
    ends: dict[str, date] = {}
    for g in person.roles:
        if g.expires is not None and g.active_on(today):
            ends[g.role.value] = max(ends.get(g.role.value, g.expires), g.expires)
    return {role: end.isoformat() for role, end in sorted(ends.items())}


def refusal(person: Person, today: date) -> str | None:
    """Why this person may not log in today, or None if they may."""
    if active_roles(person, today):
        return None
    ended = [g.expires for g in person.roles if g.expires is not None]
    if ended:
        return (
            f"Your facility account expired on {max(ended).isoformat()}. "
            "Contact the user office to extend it."
        )
    return "Your facility account has no role yet. Contact the user office."


def quota(person: Person, roles: Sequence[str], policy: Policy) -> int:
    """Instances the person may have at once: -1 unlimited, 0 pending approval.

    A per-person quota (as VISA stores it) wins; otherwise the most generous of
    the person's roles, unlisted roles getting the default.
    """
    if person.quota is not None:
        return person.quota
    values = [policy.role_quotas.get(r, policy.default_quota) for r in roles]
    if not values:
        return 0
    return -1 if -1 in values else max(values)


def _relations(facts: Facts, roles: Sequence[str], today: date) -> dict[str, str]:
    """Each reachable proposal with the strongest reason the person reaches it."""
    found: dict[str, str] = {}

    def offer(proposal_id: str, relation: str) -> None:
        current = found.get(proposal_id)
        if current is None or _RELATION_RANK[relation] < _RELATION_RANK[current]:
            found[proposal_id] = relation

    known = {p.id: p for p in facts.proposals}
    for e in facts.team_experiments:
        if facts.person.id in e.team:
            offer(e.proposal_id, TEAM)
    if SCIENTIST_ROLES.intersection(Role(r) for r in roles):
        mine = set(facts.scientist_instruments)
        for e in facts.experiments:
            if e.instrument_id in mine:
                offer(e.proposal_id, SCIENTIST)
    for p in facts.proposals:
        if p.is_open_on(today):
            offer(p.id, OPEN_DATA)
    return {pid: rel for pid, rel in found.items() if pid in known}


def proposals(facts: Facts, roles: Sequence[str], today: date) -> list[dict[str, Any]]:
    """The proposals the person may create an instance for, strongest relation first."""
    known = {p.id: p for p in facts.proposals}
    instruments: dict[str, set[str]] = {}
    for e in facts.experiments + facts.team_experiments:
        instruments.setdefault(e.proposal_id, set()).add(e.instrument_id)
    relations = _relations(facts, roles, today)
    ordered = sorted(relations.items(), key=lambda kv: (_RELATION_RANK[kv[1]], kv[0]))
    return [
        {
            "id": pid,
            "title": known[pid].title,
            "instruments": sorted(instruments.get(pid, ())),
            "open_data": known[pid].is_open_on(today),
            "relation": relation,
        }
        for pid, relation in ordered
    ]


def instrument_control(
    facts: Facts, roles: Sequence[str], today: date, days: int
) -> list[str]:
    """Proposals whose instrument the person may pilot today.

    Needs the INSTRUMENT_CONTROL role and a place in the team of an experiment
    running from `days` before its start to `days` after its end.
    """
    if Role.INSTRUMENT_CONTROL.value not in roles:
        return []
    margin = timedelta(days=days)
    return sorted(
        {
            e.proposal_id
            for e in facts.team_experiments
            if facts.person.id in e.team and e.start - margin <= today <= e.end + margin
        }
    )


def may_pilot(person: Person, team: Iterable[Experiment], proposal: str, instrument: str, today: date,
              days: int) -> bool:
    """The person holds INSTRUMENT_CONTROL for an experiment of `proposal` on `instrument` today
    (`team`: the experiments whose team they are in). The instrument gateway's write rule and the
    OpenStack instrument groups' window, per instrument."""
    on_instrument = tuple(e for e in team if e.instrument_id == instrument)
    facts = Facts(person=person, team_experiments=on_instrument)
    return proposal in instrument_control(facts, active_roles(person, today), today, days)


def entitlements(facts: Facts, now: datetime, policy: Policy) -> dict[str, Any]:
    """The JSON-serialisable contract stored in `auth_state["visa"]`.

    `now` must be timezone-aware; its local date is the facility's "today".
    """
    today = now.date()
    person = facts.person
    roles = active_roles(person, today)
    return {
        "person": {"id": person.id, "name": person.name, "email": person.email},
        "roles": roles,
        "role_expires": role_expiry(person, today),
        "admin": Role.ADMIN.value in roles,
        "quota": quota(person, roles, policy),
        "proposals": proposals(facts, roles, today),
        "instrument_control": instrument_control(
            facts, roles, today, policy.instrument_control_days
        ),
        "computed_at": now.isoformat(timespec="seconds"),
    }


def groups(facts: Facts, entitlements: Mapping[str, Any]) -> list[str]:
    """JupyterHub group names for this person.

    `proposal:<id>` for proposals they are on (team or as instrument scientist; not
    open data, which everybody has), `instrument:<id>` for instruments they are a
    scientist of (when their role makes that count) and `role:<role>` in lower case.
    """
    names = [f"role:{r.lower()}" for r in entitlements["roles"]]
    names += [
        f"proposal:{p['id']}" for p in entitlements["proposals"] if p["relation"] != OPEN_DATA
    ]
    if SCIENTIST_ROLES.intersection(Role(r) for r in entitlements["roles"]):
        names += [f"instrument:{i}" for i in facts.scientist_instruments]
    return sorted(set(names))


def seat_account(name: str, auth_state: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The refresh of an account made by a course's sign-up link (``auth_state["visa"]["seat"]``,
    written by the hub's seat page), which the catalogue does not know: its entitlements kept as
    they are (GUEST until the course end, no quota), so its owner stays signed in to download their
    work after the course; visa-training deletes the account after that. None for other accounts."""
    visa = (auth_state or {}).get("visa") or {}
    seat = visa.get("seat")
    if not isinstance(seat, Mapping):
        return None
    return {"name": name, "admin": False, "groups": list(seat.get("groups") or []), "auth_state": dict(auth_state)}


@dataclass(frozen=True)
class Decision:
    """The answer to "may this person create this instance?"."""

    allowed: bool
    message: str = ""
    relations: tuple[tuple[str, str], ...] = ()


def check_create(
    entitlements: Mapping[str, Any],
    proposal_ids: Iterable[str],
    running: int,
    *,
    require_own_proposal: bool = False,
) -> Decision:
    """May the person create one more instance attached to these proposals?

    `running` is how many instances they already have. Users must attach at least
    one proposal (open data counts unless `require_own_proposal`, VISA's stricter
    rule); STAFF and ADMIN may attach none.
    """
    quota_ = int(entitlements["quota"])
    if quota_ == 0:
        return Decision(
            False, "Your account is awaiting approval: you cannot create instances yet."
        )
    if quota_ != -1 and running >= quota_:
        return Decision(
            False,
            f"You already have {running} instance(s) and your quota is {quota_}. "
            "Delete one before creating another.",
        )
    reachable = {p["id"]: p["relation"] for p in entitlements["proposals"]}
    wanted = list(dict.fromkeys(proposal_ids))
    refused = [pid for pid in wanted if pid not in reachable]
    if refused:
        return Decision(False, f"You have no access to proposal(s) {', '.join(refused)}.")
    relations = tuple((pid, reachable[pid]) for pid in wanted)
    if not set(entitlements["roles"]) & {r.value for r in NO_PROPOSAL_ROLES}:
        if not wanted:
            return Decision(False, "Choose at least one proposal to attach to the instance.")
        if require_own_proposal and all(rel == OPEN_DATA for _, rel in relations):
            return Decision(
                False, "Attach at least one of your own proposals; open data alone is not enough."
            )
    return Decision(True, "", relations)
