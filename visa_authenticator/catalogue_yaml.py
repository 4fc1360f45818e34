"""Turn the YAML catalogue document into validated records (pure, no I/O).

Every record is checked on its own and all of its problems are reported in one
line, naming the file and the record, so a facility administrator can fix a file
in one pass. A bad record is skipped and the rest of the catalogue still works;
records that refer to a skipped record are skipped too (and say why), because
granting access on half-valid data is worse than granting none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import yaml

from .catalogue import PERSON_ID_RE, RECORD_ID_RE, Experiment, Instrument, Person, Proposal, Role, RoleGrant
from .catalogue_data import CatalogueData

SECTIONS = ("persons", "instruments", "proposals", "experiments")


def _shown(name: str) -> str:
    """A name from the file as a problem line shows it: one line, whatever it contains."""
    return name if name.isprintable() else repr(name)


class CatalogueFormatError(ValueError):
    """The document as a whole is unusable (not YAML, not a mapping...)."""


class _NoTimestampLoader(yaml.SafeLoader):
    """SafeLoader that keeps dates as strings.

    PyYAML turns `2026-13-01` into an exception for the whole file; parsing dates
    ourselves lets one bad date skip one record instead.
    """


_NoTimestampLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# an explicit !!timestamp stays text too (PyYAML's own constructor fails on a bad one with an
# AttributeError, and a datetime would not compare with the other dates)
_NoTimestampLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_scalar)


def load_yaml(text: str) -> Any:
    """Parse YAML text, raising CatalogueFormatError with the position on failure."""
    try:
        return yaml.load(text, Loader=_NoTimestampLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as e:
        raise CatalogueFormatError(f"not valid YAML: {e}") from e
    except RecursionError:
        raise CatalogueFormatError("not usable YAML: nested too deeply") from None
    except ValueError as e:  # a constructor's own limit, e.g. an integer of over 4300 digits
        raise CatalogueFormatError(f"not usable YAML: {e}") from None


@dataclass
class _Fields:
    """Reads the fields of one raw record, collecting problems instead of raising."""

    raw: Mapping[str, Any]
    problems: list[str] = field(default_factory=list)

    def text(self, name: str, required: bool = True, default: str | None = None) -> str | None:
        value = self.raw.get(name)
        if value is None:
            if required:
                self.problems.append(f"missing field '{name}'")
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            self.problems.append(f"field '{name}' must be text, not {type(value).__name__}")
            return default
        value = str(value).strip()
        if required and not value:
            self.problems.append(f"field '{name}' is empty")
        return value

    def ident(self, name: str, pattern: Any, what: str) -> str | None:
        value = self.text(name)
        if value and not pattern.match(value):
            self.problems.append(f"{what} {value!r} is not a valid id ({pattern.pattern})")
            return None
        return value

    def day(self, name: str, required: bool = True) -> date | None:
        value = self.raw.get(name)
        if value is None:
            if required:
                self.problems.append(f"missing field '{name}'")
            return None
        return self.parse_day(value, f"field '{name}'")

    def parse_day(self, value: Any, what: str) -> date | None:
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value).strip())
        except ValueError:
            self.problems.append(f"{what}: bad date {value!r} (expected YYYY-MM-DD)")
            return None

    def id_list(self, name: str, known: Mapping[str, Any], what: str) -> tuple[str, ...]:
        value = self.raw.get(name)
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problems.append(f"field '{name}' must be a list")
            return ()
        out: list[str] = []
        for item in value:
            item = str(item).strip()
            if item not in known:
                self.problems.append(f"unknown {what} {item!r} in '{name}'")
            elif item not in out:
                out.append(item)
        return tuple(out)

    def ref(self, name: str, known: Mapping[str, Any], what: str) -> str | None:
        value = self.text(name)
        if value and value not in known:
            self.problems.append(f"unknown {what} {value!r}")
            return None
        return value

    def unknown_keys(self, allowed: Iterable[str]) -> None:
        extra = sorted(set(map(str, self.raw)) - set(allowed))
        if extra:
            self.problems.append(
                f"unknown field(s) {', '.join(map(_shown, extra))} (allowed: {', '.join(allowed)})"
            )


def _roles(f: _Fields) -> tuple[RoleGrant, ...]:
    raw = f.raw.get("roles", ["USER"])
    if not isinstance(raw, list):
        f.problems.append("field 'roles' must be a list")
        return ()
    grants: list[RoleGrant] = []
    for item in raw:
        expires = None
        if isinstance(item, dict):
            sub = _Fields(item)
            sub.unknown_keys(("role", "expires"))
            name = sub.text("role")
            expires = sub.day("expires", required=False)
            f.problems.extend(f"role {_shown(name or '?')}: {p}" for p in sub.problems)
            if sub.problems:
                continue
        else:
            name = str(item).strip()
        try:
            grants.append(RoleGrant(Role(str(name).upper()), expires))
        except ValueError:
            f.problems.append(
                f"unknown role {name!r} (known: {', '.join(r.value for r in Role)})"
            )
    return tuple(grants)


def _quota(f: _Fields) -> int | None:
    value = f.raw.get("quota")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        f.problems.append(f"quota must be an integer >= -1, not {value!r}")
        return None
    return value


def _person(f: _Fields, ctx: _Context) -> Person | None:
    f.unknown_keys(("id", "name", "email", "roles", "quota", "demo_password"))
    pid = f.ident("id", PERSON_ID_RE, "person id")
    name = f.text("name")
    email = f.text("email", required=False, default="")
    roles, quota = _roles(f), _quota(f)
    password = f.text("demo_password", required=False)
    if f.problems or not pid or not name:
        return None
    if password:
        ctx.demo_passwords[pid] = password
    return Person(pid, name, email or "", roles, quota)


def _instrument(f: _Fields, ctx: _Context) -> Instrument | None:
    f.unknown_keys(("id", "name", "scientists"))
    iid = f.ident("id", RECORD_ID_RE, "instrument id")
    name = f.text("name")
    scientists = f.id_list("scientists", ctx.persons, "person")
    if f.problems or not iid or not name:
        return None
    return Instrument(iid, name, scientists)


def _proposal(f: _Fields, ctx: _Context) -> Proposal | None:
    f.unknown_keys(("id", "title", "doi", "public_date"))
    pid = f.ident("id", RECORD_ID_RE, "proposal id")
    title = f.text("title")
    doi = f.text("doi", required=False)
    public = f.day("public_date", required=False)
    if f.problems or not pid or not title:
        return None
    return Proposal(pid, title, doi or None, public)


def _experiment(f: _Fields, ctx: _Context) -> Experiment | None:
    f.unknown_keys(("id", "proposal", "instrument", "start", "end", "team"))
    eid = f.ident("id", RECORD_ID_RE, "experiment id")
    proposal = f.ref("proposal", ctx.proposals, "proposal")
    instrument = f.ref("instrument", ctx.instruments, "instrument")
    start, end = f.day("start"), f.day("end")
    team = f.id_list("team", ctx.persons, "person")
    if start and end and end < start:
        f.problems.append(f"end {end} is before start {start}")
    if f.problems or not (eid and proposal and instrument and start and end):
        return None
    return Experiment(eid, proposal, instrument, start, end, team)


@dataclass
class _Context:
    """Records accepted so far, so later sections can check their references."""

    persons: dict[str, Person] = field(default_factory=dict)
    instruments: dict[str, Instrument] = field(default_factory=dict)
    proposals: dict[str, Proposal] = field(default_factory=dict)
    experiments: dict[str, Experiment] = field(default_factory=dict)
    demo_passwords: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    numbered: bool = True  # label records by list position (files) or by id only (SQL rows)


_PARSERS: dict[str, Callable[[_Fields, _Context], Any]] = {
    "persons": _person,
    "instruments": _instrument,
    "proposals": _proposal,
    "experiments": _experiment,
}


def _label(section: str, index: int, raw: Any, numbered: bool = True) -> str:
    rid = raw.get("id") if isinstance(raw, dict) else None
    where = f"{section}[{index}]" if numbered or rid is None else section
    return where + (f" {str(rid)!r}" if rid is not None else "")


def _section(doc: Mapping[str, Any], section: str, source: str, ctx: _Context) -> None:
    raw_list = doc.get(section) or []
    if not isinstance(raw_list, list):
        ctx.problems.append(f"{source}: '{section}' must be a list; section ignored")
        return
    accepted: dict[str, Any] = getattr(ctx, section)
    for index, raw in enumerate(raw_list):
        label = _label(section, index, raw, ctx.numbered)
        if not isinstance(raw, dict):
            ctx.problems.append(f"{source}: {label}: not a mapping; record skipped")
            continue
        rid = str(raw.get("id", "")).strip()
        if rid and rid in accepted:
            ctx.problems.append(
                f"{source}: {label}: duplicate id {rid!r} (the first one is kept); record skipped"
            )
            continue
        f = _Fields(raw)
        record = _PARSERS[section](f, ctx)
        if record is None:
            ctx.problems.append(f"{source}: {label}: {'; '.join(f.problems)}; record skipped")
            continue
        accepted[record.id] = record


def parse_catalogue(
    doc: Any, source: str, *, numbered: bool = True
) -> tuple[CatalogueData, list[str]]:
    """Validate a loaded YAML document; returns the good records and the problems.

    The SQL provider validates its rows with this same function (so both providers
    accept and refuse exactly the same records); it passes `numbered=False`
    because a row's position in a query result means nothing to an administrator.
    """
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise CatalogueFormatError(f"the top level must be a mapping, not {type(doc).__name__}")
    ctx = _Context(numbered=numbered)
    for key in sorted(set(map(str, doc)) - set(SECTIONS)):
        known = ", ".join(SECTIONS)
        ctx.problems.append(f"{source}: unknown section '{_shown(key)}' ignored (known: {known})")
    for section in SECTIONS:  # this order lets each section check references to earlier ones
        _section(doc, section, source, ctx)
    data = CatalogueData(
        tuple(ctx.persons.values()),
        tuple(ctx.instruments.values()),
        tuple(ctx.proposals.values()),
        tuple(ctx.experiments.values()),
        dict(ctx.demo_passwords),
    )
    return data, ctx.problems

