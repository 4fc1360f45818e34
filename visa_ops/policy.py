"""Lifecycle rules as pure decisions: given an instance, its record and the time, what is due.

No I/O here: the sweep and the API feed instances (`visa_ops.inventory`) and records
(`visa_ops.store`) in and act on the `Verdict`. Time comes from an injectable clock, so tests
move it instead of waiting days.

VISA's defaults: lifetime 14 days (USER) / 60 days (STAFF), the longest applicable rule wins
(facility roles and the plan); deletion after 4 / 8 days without real use; a warning e-mail
48 h before the end of the lifetime and 24 h before an inactivity deletion, once per deadline.
Nothing is deleted before its owner was warned at least `minimum_notice_hours` earlier.
A course instance (issue 19) lives until its course's `download_until` and is never idle while its
course runs: a participant who goes to lunch keeps their instance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from traitlets import Callable as CallableTrait
from traitlets import Dict, Float, Int, default
from traitlets.config import Configurable

from visa_collab.db import now as utcnow

from .inventory import Instance

LIFETIME, INACTIVITY = "lifetime", "inactivity"


@dataclass(frozen=True)
class Verdict:
    """What the rules say about one instance now."""

    expires_at: datetime | None  # None: unlimited
    inactivity_deadline: datetime
    last_use: datetime
    warning: tuple[str, datetime] | None  # (kind, deadline) inside its warning window: shown on banners
    warn_now: tuple[str, datetime] | None  # a warning e-mail due now (not yet sent for that deadline)
    delete: str | None  # LIFETIME | INACTIVITY: delete now, for that reason


class LifecyclePolicy(Configurable):
    """Lifetimes, inactivity limits, warnings and extension limits (VISA's defaults)."""

    role_lifetime_days = Dict(
        {"USER": 14, "STAFF": 60}, config=True,
        help="Lifetime in days by facility role (upper case); the longest applicable rule wins.",
    )
    default_lifetime_days = Int(14, config=True, help="Lifetime of an owner with none of the roles above.")
    role_inactivity_days = Dict(
        {"USER": 4, "STAFF": 8}, config=True,
        help="Days without real use (the hub's last_activity) before deletion, by facility role; the longest wins.",
    )
    default_inactivity_days = Int(4, config=True, help="Inactivity limit of an owner with none of the roles above.")
    plan_rules = Dict(
        {}, config=True,
        help="Per plan id: {'lifetime_days': int, 'auto_extend_days': int}. A plan's lifetime competes with "
             "the role's (the longest wins); requests of up to auto_extend_days are accepted automatically.",
    )
    lifetime_warning_hours = Float(48, config=True, help="E-mail warning this long before the end of a lifetime.")
    inactivity_warning_hours = Float(24, config=True, help="E-mail warning this long before an inactivity deletion.")
    minimum_notice_hours = Float(
        24, config=True,
        help="Never delete sooner than this after the warning went out (a deadline passed while the service was "
             "down, or a short plan lifetime, still gives the owner this much notice).",
    )
    max_extension_days = Int(90, config=True, help="The most days one extension request may ask for.")
    clock = CallableTrait(help="Returns now, naive UTC (tests inject a manual clock).")

    @default("clock")
    def _default_clock(self) -> Callable[[], datetime]:
        return utcnow

    def now(self) -> datetime:
        return self.clock()

    # -- rules -----------------------------------------------------------------------------------
    def _plan(self, plan: str) -> Mapping[str, Any]:
        rule = self.plan_rules.get(plan) or {}
        return rule if isinstance(rule, Mapping) else {}

    def lifetime_days(self, roles: Iterable[str], plan: str) -> int:
        known = [int(self.role_lifetime_days[r]) for r in roles if r in self.role_lifetime_days]
        days = max(known) if known else self.default_lifetime_days
        plan_days = self._plan(plan).get("lifetime_days")
        return max(days, int(plan_days)) if plan_days else days

    def inactivity_days(self, roles: Iterable[str]) -> int:
        known = [int(self.role_inactivity_days[r]) for r in roles if r in self.role_inactivity_days]
        return max(known) if known else self.default_inactivity_days

    def auto_extend_days(self, plan: str) -> int:
        return int(self._plan(plan).get("auto_extend_days") or 0)

    def expires_at(self, inst: Instance, record: Mapping[str, Any]) -> datetime | None:
        if record.get("unlimited"):
            return None
        if inst.ends_at is not None:  # a course instance: its end is the course's (download_until), not a role's
            return inst.ends_at + timedelta(days=int(record.get("extra_days") or 0))
        created = record.get("created_at") or inst.created or self.now()
        if inst.created and inst.created < created:
            created = inst.created
        days = self.lifetime_days(inst.owner_roles, inst.plan) + int(record.get("extra_days") or 0)
        return created + timedelta(days=days)

    def last_use(self, inst: Instance, record: Mapping[str, Any]) -> datetime:
        times = [t for t in (inst.last_activity, inst.created, record.get("created_at")) if t is not None]
        return max(times) if times else self.now()

    def idle_since(self, inst: Instance, record: Mapping[str, Any]) -> datetime:
        """Where the inactivity limit counts from: the last real use, or a course instance's course
        end if later (a course's participants are not idle between its sessions)."""
        last_use = self.last_use(inst, record)
        return max(last_use, inst.course_ends_at) if inst.course_ends_at else last_use

    def _deadline_check(self, kind: str, deadline: datetime | None, window_hours: float,
                        record: Mapping[str, Any], at: datetime) -> tuple[tuple | None, tuple | None, bool]:
        """(shown warning, warning to send, delete now) for one deadline."""
        if deadline is None or at < deadline - timedelta(hours=window_hours):
            return None, None, False
        warned_for, warned_at = record.get(f"warned_{kind}_for"), record.get(f"warned_{kind}_at")
        sent = warned_for == deadline and warned_at is not None
        if not sent:
            shown = (kind, max(deadline, at + timedelta(hours=self.minimum_notice_hours)))
            return shown, (kind, deadline), False
        effective = max(deadline, warned_at + timedelta(hours=self.minimum_notice_hours))
        return (kind, effective), None, at >= effective

    def decide(self, inst: Instance, record: Mapping[str, Any] | None = None, at: datetime | None = None) -> Verdict:
        """The verdict for `inst` at `at` (default: the clock). `record`: its lifecycle row, if any."""
        record = record or {}
        at = at or self.now()
        expires = self.expires_at(inst, record)
        last_use = self.last_use(inst, record)
        idle_deadline = self.idle_since(inst, record) + timedelta(days=self.inactivity_days(inst.owner_roles))
        checks = [
            (LIFETIME, *self._deadline_check(LIFETIME, expires, self.lifetime_warning_hours, record, at)),
            (INACTIVITY, *self._deadline_check(INACTIVITY, idle_deadline, self.inactivity_warning_hours, record, at)),
        ]
        delete = next((kind for kind, _, _, due in checks if due), None)
        shown = [w for _, w, _, _ in checks if w]
        send = next((s for _, _, s, _ in checks if s), None)
        return Verdict(
            expires_at=expires, inactivity_deadline=idle_deadline, last_use=last_use,
            warning=min(shown, key=lambda w: w[1]) if shown else None, warn_now=send, delete=delete,
        )

    def check_extension(self, days: Any, comment: Any) -> tuple[int, str]:
        """A valid (days, comment) or ValueError with a message for the person asking."""
        if isinstance(days, bool) or not isinstance(days, int):
            raise ValueError("days must be a whole number of days.")
        if days < 1:
            raise ValueError("days must be at least 1.")
        if days > self.max_extension_days:
            raise ValueError(f"days must be at most {self.max_extension_days}.")
        if not isinstance(comment, str) or not comment.strip():
            raise ValueError("Say why you need more time (comment).")
        if len(comment) > 2000:
            raise ValueError("The comment is too long: at most 2000 characters.")
        return days, comment.strip()
