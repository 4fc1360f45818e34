"""Instance member roles and who may hold them: pure rules, no I/O.

A member's role on one instance is a JupyterHub *share* of that server carrying
``access:servers`` (so the hub lets them through OAuth) and exactly one custom scope naming
the role, both filtered to the server (``!server=<owner>/<name>``). The instance reads the role
back from the scopes of the member's OAuth token (`visa_instance.authorizer`); the two sides
share nothing but these scope names (``tests/collab/test_contract.py`` checks they agree).

Eligibility follows the facility catalogue as the hub sees it, through the groups the VISA
authenticator manages: ``proposal:<id>`` (team members and the instruments' scientists),
``role:<facility role>`` in lower case.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import Enum


class Role(str, Enum):
    OWNER = "owner"
    USER = "user"  # full control: desktop input, JupyterLab, kernels, terminals, files
    GUEST = "guest"  # view-only desktop; nothing else
    SUPPORT = "support"  # staff helping: full control

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    Role.OWNER: "Owner",
    Role.USER: "User (full control)",
    Role.GUEST: "Guest (view only)",
    Role.SUPPORT: "Support (full control)",
}

GRANTABLE = (Role.USER, Role.GUEST, Role.SUPPORT)
ROLE_SCOPES = {
    Role.USER: "custom:visa-user",
    Role.GUEST: "custom:visa-guest",
    Role.SUPPORT: "custom:visa-support",
}
# Held (unfiltered) by facility administrators: full control of every instance they open.
ADMIN_SCOPE = "custom:visa-admin"

CUSTOM_SCOPES = {
    ROLE_SCOPES[Role.USER]: {
        "description": "Work in a shared VISA instance: desktop input, JupyterLab, kernels, terminals, files.",
    },
    ROLE_SCOPES[Role.GUEST]: {
        "description": "Watch the desktop of a shared VISA instance, without sending input.",
    },
    ROLE_SCOPES[Role.SUPPORT]: {
        "description": "Help in a VISA instance as facility support staff, with full control.",
    },
    ADMIN_SCOPE: {
        "description": "Full control of any VISA instance one opens (facility administrators).",
    },
}

OWNER_AWAY_POLICIES = {
    "lock": "lock the room: members can only watch until the owner is back",
    "disconnect": "disconnect everyone until the owner is back",
}
DEFAULT_OWNER_AWAY = "lock"

# Facility roles (as `role:<name>` groups) that may ask for SUPPORT access on any instance,
# and those that may ask on the instances of the proposals they are attached to.
SUPPORT_EVERYWHERE = frozenset({"role:it_support", "role:admin"})
SUPPORT_ON_PROPOSAL = frozenset({"role:instrument_scientist"})
# May be offered SUPPORT by an owner, but do not get it on request.
SUPPORT_OFFERABLE = frozenset({"role:scientific_computing"})
COURSE_SERVER = re.compile(r"^course-[a-z0-9-]{1,24}$")  # a course instance (visa_training)
# The hub service that may let a course's trainers watch and help its instances (Collaboration.course_grant).
TRAINING_SERVICE = "visa-training"


def course_trainers(server: str, options: dict) -> tuple[str, ...]:
    """The trainers of a course instance from its ``user_options`` (``course_trainers``, which the
    hub's spawner overwrites from the training service at every start of a server ``course-<id>``
    with ``course: <id>``); () for any other server. Only true of a running server (see
    `Collaboration._instance`)."""
    course = str(options.get("course") or "")
    names = options.get("course_trainers")
    if not course or server != f"course-{course}" or not isinstance(names, list):
        return ()
    return tuple(str(n) for n in names if isinstance(n, str))


class RoleError(ValueError):
    """A role name that does not exist or cannot be granted."""


def parse_role(value: object) -> Role:
    """A grantable role from user input; the message says what is allowed."""
    allowed = ", ".join(r.value for r in GRANTABLE)
    if not isinstance(value, str):
        raise RoleError(f"Give a role: one of {allowed}.")
    try:
        role = Role(value.strip().lower())
    except ValueError:
        raise RoleError(f"Unknown role {str(value)[:40]!r}: choose one of {allowed}.") from None
    if role not in GRANTABLE:
        raise RoleError(f"The {role.value} role cannot be granted: choose one of {allowed}.")
    return role


def server_filter(owner: str, server: str) -> str:
    return f"server={owner}/{server}"


def share_scopes(role: Role, owner: str, server: str) -> list[str]:
    """The scopes of the share that makes someone `role` on owner/server."""
    f = server_filter(owner, server)
    return [f"access:servers!{f}", f"{ROLE_SCOPES[role]}!{f}"]


def role_scopes(owner: str, server: str) -> list[str]:
    """Every role scope on owner/server (to revoke a role whatever it was)."""
    f = server_filter(owner, server)
    return [f"{ROLE_SCOPES[r]}!{f}" for r in GRANTABLE]


def role_of_share(scopes: Iterable[str]) -> Role | None:
    """The role a share's scopes give (the strongest if, transiently, there are two)."""
    bases = {s.partition("!")[0] for s in scopes}
    for role in (Role.SUPPORT, Role.USER, Role.GUEST):
        if ROLE_SCOPES[role] in bases:
            return role
    return None


def oauth_client_allowed_scopes() -> list[str]:
    """What an instance's OAuth tokens may carry besides access: the role scopes, filtered.

    ``!server`` is JupyterHub's shorthand for "this client's server"; the hub expands it when
    a member authorizes the instance, and keeps only what the member's share gives.
    """
    return [f"{ROLE_SCOPES[r]}!server" for r in GRANTABLE] + [ADMIN_SCOPE]


# -- eligibility ---------------------------------------------------------------------------------

def on_team(groups: Iterable[str], proposal: str | None) -> bool:
    return bool(proposal) and f"proposal:{proposal}" in set(groups)


def may_request_support(groups: Iterable[str], proposal: str | None) -> bool:
    """May this person ask for SUPPORT access (and get it directly while the owner is away)?"""
    g = set(groups)
    if g & SUPPORT_EVERYWHERE:
        return True
    return bool(g & SUPPORT_ON_PROPOSAL) and on_team(g, proposal)


def refusal(role: Role, person: str, groups: Iterable[str], proposal: str | None, server: str = "",
            trainers: Iterable[str] = ()) -> str | None:
    """Why `person` may not be given `role` on an instance of `proposal` (None: they may).

    USER and GUEST see the proposal's data (the desktop shows it): team members only. SUPPORT:
    facility support staff (IT support, administrators, the proposal's instrument scientists,
    scientific computing). A course instance (`server` ``course-<id>``, issue 19) may also be
    watched (GUEST) and helped (SUPPORT) by the course's `trainers` (as the hub's spawner recorded
    them when it started: `Collaboration._instance`) and administrators, whatever their team: the
    training service grants them acting as the owner. Anyone else follows the usual rules, so a
    participant cannot hand their course instance to a friend.
    """
    g = set(groups)
    if (role in (Role.GUEST, Role.SUPPORT) and COURSE_SERVER.match(server or "")
            and (person in set(trainers) or "role:admin" in g)):
        return None
    if role in (Role.USER, Role.GUEST):
        if on_team(g, proposal):
            return None
        if not proposal:
            return f"This instance has no proposal: it cannot be shared as {role.value}."
        return f"{person} is not on the team of proposal {proposal}."
    if role is Role.SUPPORT:
        if may_request_support(g, proposal) or g & SUPPORT_OFFERABLE:
            return None
        return f"{person} is not facility support staff for proposal {proposal or '—'}."
    return f"The {role.value} role cannot be granted."
