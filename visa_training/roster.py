"""Who may take part: uploaded participant lists read line by line, and the plan check (pure functions).

A trainer pastes or uploads a list (one per line: ``username``, ``email`` or ``Name <email>``);
each line gets its own verdict so a list of 30 with two typos adds 28 people and says which two
lines to fix. The plan check refuses a course whose plan some participant may not use, with the
reason, rather than letting their instance fail on the morning of the course.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .course import USER_RE

EMAIL_RE = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
NAMED_EMAIL_RE = re.compile(r"^(?P<name>[^<>]*)<(?P<email>[^<>]+)>$")
ADDED, UNKNOWN, DUPLICATE, MALFORMED = "added", "unknown", "duplicate", "malformed"
MAX_LINES = 2000
GUEST = "GUEST"


@dataclass(frozen=True)
class LineVerdict:
    """What became of one line of an uploaded list (`user`: the account it named, if any)."""

    line: int
    text: str
    verdict: str
    user: str | None = None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "text": self.text, "verdict": self.verdict, "user": self.user,
                "detail": self.detail}


def read_list(text: str, find: Callable[[str], str | None], find_email: Callable[[str], str | None],
              already: Iterable[str] = ()) -> list[LineVerdict]:
    """One verdict per non-blank line. `find(name)` / `find_email(address)` return the facility
    account's user name or None; `already` are the course's participants (a duplicate too)."""
    seen = set(already)
    out: list[LineVerdict] = []
    for number, raw in enumerate(text.splitlines()[:MAX_LINES], 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        shown = line[:200]
        m = NAMED_EMAIL_RE.match(line)
        email = m.group("email").strip() if m else (line if "@" in line else None)
        if email is not None:
            if not EMAIL_RE.match(email):
                out.append(LineVerdict(number, shown, MALFORMED, detail="not an e-mail address"))
                continue
            user = find_email(email.lower())
        elif USER_RE.match(line.lower()) and " " not in line:
            user = find(line.lower())
        else:
            out.append(LineVerdict(number, shown, MALFORMED,
                                   detail="expected a user name, an e-mail address or Name <e-mail>"))
            continue
        if user is None:
            out.append(LineVerdict(number, shown, UNKNOWN, detail="no facility account has this name or address"))
        elif user in seen:
            out.append(LineVerdict(number, shown, DUPLICATE, user, "already a participant or listed above"))
        else:
            seen.add(user)
            out.append(LineVerdict(number, shown, ADDED, user))
    return out


def plan_refusal(plan_id: str, plans: Sequence[Mapping[str, Any]], participants: Mapping[str, Iterable[str]],
                 guest_seats: int) -> str | None:
    """Why the participants may not use the plan (None: they may). `participants`: user name → the
    facility roles they hold during the course; GUEST seats hold GUEST. A plan with no ``roles``
    is open to every role (VisaSpawner.plans)."""
    plan = next((p for p in plans if str(p.get("id")) == plan_id), None)
    if plan is None:
        known = ", ".join(str(p.get("id")) for p in plans) or "none"
        return f"There is no plan {plan_id!r} in the hub's catalogue (plans: {known})."
    allowed = {str(r).upper() for r in plan.get("roles") or ()}
    if not allowed:
        return None
    label = plan.get("display_name") or plan_id
    if guest_seats and GUEST not in allowed:
        return (f"The plan {label!r} is for {', '.join(sorted(allowed))} only: guest seats (GUEST) may not use it. "
                "Choose another plan or remove the guest seats.")
    refused = sorted(name for name, roles in participants.items() if not allowed & {str(r).upper() for r in roles})
    if refused:
        return (f"The plan {label!r} is for {', '.join(sorted(allowed))} only; these participants hold none of "
                f"those roles: {', '.join(refused)}.")
    return None
