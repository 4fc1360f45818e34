"""What a person asks for when creating an instance: normalise → validate → apply.

Pure functions over plain data (the form, the person's entitlements from the authenticator,
the plan catalogue), so the rules are tested as tables and give the same answer on the form
page, in the REST API and inside `VisaSpawner.start`.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .archives import Archive
from .backends.base import Plan
from .plans import unavailable_reason

MAX_NAME_LENGTH = 250
MAX_SLUG_LENGTH = 30
SCREENS = ("1280x720", "1600x900", "1920x1080", "2560x1440", "3840x2160")
KEYBOARDS = {
    "us": "English (US)", "gb": "English (UK)", "fr": "French", "de": "German",
    "ch": "Swiss", "es": "Spanish", "it": "Italian", "se": "Swedish", "dk": "Danish",
}


class OptionError(ValueError):
    """A request a person can fix; the message is shown to them as it is."""


@dataclass(frozen=True)
class InstanceRequest:
    display_name: str
    server_name: str
    proposal: str
    plan: str
    screen: str
    keyboard: str
    restore: str = ""  # the id of an archived home of the person's that the new home starts from

    def user_options(self) -> dict[str, str]:
        """What JupyterHub stores as the spawner's user_options (the name is the hub's)."""
        options = {"proposal": self.proposal, "plan": self.plan, "screen": self.screen, "keyboard": self.keyboard}
        return {**options, "restore": self.restore} if self.restore else options


def first(form: Mapping[str, Sequence[str] | str], key: str) -> str:
    """One value of a form field, whether the form came as lists (tornado) or plain strings."""
    value = form.get(key, "")
    if isinstance(value, (list, tuple)):
        value = value[0] if value else ""
    return str(value)


def normalise_name(raw: str) -> str:
    """NFC, whitespace folded to single spaces, stripped; raises OptionError when unusable."""
    name = " ".join(unicodedata.normalize("NFC", raw).split())
    if not name:
        raise OptionError("Give the instance a name.")
    if len(name) > MAX_NAME_LENGTH:
        raise OptionError(f"The name is too long: at most {MAX_NAME_LENGTH} characters.")
    if any(unicodedata.category(c)[0] == "C" for c in name):
        raise OptionError("The name contains control characters.")
    return name


def slugify(name: str, taken: Iterable[str] = ()) -> str:
    """A JupyterHub server name `[a-z0-9-]{1,30}` from a free-text name, unique among `taken`."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:MAX_SLUG_LENGTH].strip("-")
    slug = slug or "instance"
    taken = set(taken)
    candidate, n = slug, 2
    while candidate in taken:
        suffix = f"-{n}"
        candidate = slug[: MAX_SLUG_LENGTH - len(suffix)].rstrip("-") + suffix
        n += 1
    return candidate


def allowed_plans(plans: Sequence[Plan], roles: Iterable[str]) -> list[Plan]:
    """Plans a person with these facility roles may use."""
    roles = set(roles)
    return [p for p in plans if not p.roles or roles & set(p.roles)]


def check_quota(quota: int, existing: int) -> None:
    """VISA's quota semantics: -1 unlimited, 0 account pending approval, N at most N instances."""
    if quota == 0:
        raise OptionError(
            "Your account is waiting for approval by the facility: you cannot create instances yet."
        )
    if 0 < quota <= existing:
        raise OptionError(
            f"You already have {existing} instance(s), the most your account allows ({quota}). "
            "Delete one to create another."
        )


def validate_request(
    form: Mapping[str, Sequence[str] | str],
    *,
    entitlements: Mapping,
    plans: Sequence[Plan],
    existing: Mapping[str, str],
    screens: Sequence[str] = SCREENS,
    keyboards: Mapping[str, str] = KEYBOARDS,
    roles_without_proposal: Iterable[str] = ("STAFF", "ADMIN"),
    new: bool = True,
    disabled: Collection[str] = (),
    gpus_free: Mapping[str, int] | None = None,
    archives: Mapping[str, Archive] | None = None,
) -> InstanceRequest:
    """Check a creation request against the person's entitlements; return the clean request.

    `existing` maps the person's server names to display names. With `new=False` the request
    restarts an existing instance: name and quota checks are skipped. Facility staff (VISA's rule)
    may create an instance without a proposal: it then mounts no data. A plan in `disabled`, or
    needing more GPUs than its backend has free (`gpus_free`: backend → count; none if absent),
    is refused, for a restart too.
    """
    if new:
        check_quota(int(entitlements.get("quota", 2)), len(existing))
        display_name = normalise_name(first(form, "name"))
        if display_name.casefold() in {d.casefold() for d in existing.values()}:
            raise OptionError(f"You already have an instance named “{display_name}”.")
        server_name = slugify(display_name, taken=existing.keys())
    else:
        if int(entitlements.get("quota", 2)) == 0:
            check_quota(0, 0)
        display_name = server_name = ""

    proposal = first(form, "proposal").strip()
    mine = {p["id"]: p for p in entitlements.get("proposals", [])}
    if not proposal:
        if not set(entitlements.get("roles", [])) & set(roles_without_proposal):
            raise OptionError("Choose the proposal this instance is for.")
    elif proposal not in mine:
        raise OptionError(f"Proposal “{proposal[:64]}” is not one you can use.")

    usable = allowed_plans(plans, entitlements.get("roles", []))
    plan_id = first(form, "plan").strip() or next((p.id for p in usable if p.default), "")
    plan = next((p for p in usable if p.id == plan_id), None)
    if plan is None:
        raise OptionError(f"Plan “{plan_id[:64]}” is not available to you.")
    why = unavailable_reason(plan, disabled, gpus_free or {})
    if why:
        then = "Choose another plan." if new else "Start it again later, or ask the facility's administrators."
        raise OptionError(f"Plan “{plan.display_name}” cannot be started: {why}. {then}")

    screen = first(form, "screen").strip() or screens[0]
    if screen not in screens:
        raise OptionError(f"Screen size “{screen[:32]}” is not offered; choose one of {', '.join(screens)}.")
    keyboard = first(form, "keyboard").strip() or next(iter(keyboards))
    if keyboard not in keyboards:
        raise OptionError(f"Keyboard layout “{keyboard[:32]}” is not offered.")
    restore = check_restore(first(form, "restore").strip(), archives or {}, proposal, plan) if new else ""
    return InstanceRequest(display_name, server_name, proposal, plan_id, screen, keyboard, restore)


def check_restore(restore: str, archives: Mapping[str, Archive], proposal: str, plan: Plan) -> str:
    """The archive id a new instance restores ("" for none): one of the person's own `archives`
    (id → Archive), of the same proposal, on a plan of a backend that can restore it."""
    if not restore:
        return ""
    archive = archives.get(restore)
    if archive is None:
        raise OptionError("That archived home is not one of yours, or it no longer exists.")
    if not archive.restorable:
        raise OptionError(f"Archives of {archive.backend} instances cannot be restored yet: download it instead.")
    if archive.proposal != proposal:
        raise OptionError(f"That archived home belongs to proposal {archive.proposal or '(none)'}: "
                          "restore it into an instance of the same proposal.")
    if archive.backend != plan.backend:
        raise OptionError(f"Choose a {archive.backend} plan to restore that archived home.")
    return restore


def restart_form(display_name: str, user_options: Mapping[str, object] | None) -> str:
    """The hub's spawn page for an existing instance: its settings, nothing to fill in.

    VisaSpawner has a form only so that JupyterHub never starts anything on a GET of
    ``/hub/spawn/…``: it shows this page, and the start button POSTs it with the XSRF token.
    """
    from html import escape

    opts = dict(user_options or {})
    rows = "".join(
        f"<tr><th>{escape(label)}</th><td>{escape(str(opts.get(key) or '—'))}</td></tr>"
        for key, label in (("proposal", "Proposal"), ("plan", "Plan"), ("screen", "Screen"),
                           ("keyboard", "Keyboard"))
    )
    return (f"<p>Start <strong>{escape(display_name)}</strong> again with its settings. "
            "New instances are created from the home page.</p>"
            f'<table class="table table-sm">{rows}</table>')
