"""Pure views for the admin console: filter, sort and page instances, summaries, the SVG plot.

No I/O here, so every rule is a table-driven test; the handlers in `console.py` feed these from
the hub's database (`inventory.load_instances`), the hub's capacity call and the service's store.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

PAGE_SIZE = 50
STATES = ("running", "pending", "stopped")
SORT_KEYS = ("owner", "server", "proposal", "plan", "backend", "state", "created", "last_activity")
MAX_DAYS = 3650


class BadQuery(ValueError):
    """A filter the admin typed makes no sense: shown as a 400 with this message."""


def utc(value: datetime | None) -> datetime | None:
    """The hub stores naive UTC datetimes; compare everything as aware UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _days(args: Mapping[str, str], name: str) -> float | None:
    text = (args.get(name) or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise BadQuery(f"{name} must be a number of days, not {text[:20]!r}.") from None
    if not 0 <= value <= MAX_DAYS:  # also refuses NaN
        raise BadQuery(f"{name} must be between 0 and {MAX_DAYS} days.")
    return value


@dataclass(frozen=True)
class InstanceQuery:
    """The instances page's filters, as the admin typed them in the query string."""

    user: str = ""
    proposal: str = ""
    instrument: str = ""
    plan: str = ""
    state: str = ""
    min_age_days: float | None = None  # created at least this long ago
    max_age_days: float | None = None  # created at most this long ago
    idle_days: float | None = None  # no real use for at least this long (never used counts)
    sort: str = "created"
    descending: bool = True
    page: int = 1

    @classmethod
    def parse(cls, args: Mapping[str, str]) -> InstanceQuery:
        """Validate the query string; `BadQuery` names the first bad field."""
        text = {k: (args.get(k) or "").strip()[:200] for k in ("user", "proposal", "instrument", "plan", "state")}
        if text["state"] and text["state"] not in STATES:
            raise BadQuery(f"state must be one of {', '.join(STATES)}.")
        sort = (args.get("sort") or "created").strip()
        descending = sort.startswith("-") or (args.get("order") == "desc")
        sort = sort.lstrip("-")
        if sort not in SORT_KEYS:
            raise BadQuery(f"sort must be one of {', '.join(SORT_KEYS)}.")
        if not args.get("sort") and not args.get("order"):
            descending = True  # newest first by default
        elif args.get("order") == "asc":
            descending = False
        page_text = (args.get("page") or "1").strip()
        if not page_text.isdigit() or not 1 <= int(page_text) <= 100_000:
            raise BadQuery("page must be a whole number from 1.")
        query = cls(**text, min_age_days=_days(args, "min_age_days"), max_age_days=_days(args, "max_age_days"),
                    idle_days=_days(args, "idle_days"), sort=sort, descending=descending, page=int(page_text))
        if (query.min_age_days is not None and query.max_age_days is not None
                and query.min_age_days > query.max_age_days):
            raise BadQuery("min_age_days is larger than max_age_days: no instance can match.")
        return query

    def matches(self, inst: Any, now: datetime) -> bool:
        if self.user and self.user.lower() not in inst.owner.lower():
            return False
        if self.proposal and self.proposal.lower() not in (inst.proposal or "").lower():
            return False
        if self.instrument and not any(self.instrument.lower() in i.lower() for i in inst.instruments or ()):
            return False
        if self.plan and self.plan != inst.plan:
            return False
        if self.state and self.state != inst.state:
            return False
        created = utc(inst.created)
        age = (now - created) if created else None
        if self.min_age_days is not None and (age is None or age < timedelta(days=self.min_age_days)):
            return False
        if self.max_age_days is not None and (age is None or age > timedelta(days=self.max_age_days)):
            return False
        if self.idle_days is not None:
            last = utc(inst.last_activity)
            if last is not None and now - last < timedelta(days=self.idle_days):
                return False
        return True

    def link(self, **changes: Any) -> str:
        """This query as a query string, with `changes` (page, sort) applied."""
        from urllib.parse import urlencode

        values = {
            "user": self.user, "proposal": self.proposal, "instrument": self.instrument, "plan": self.plan,
            "state": self.state, "min_age_days": _num(self.min_age_days), "max_age_days": _num(self.max_age_days),
            "idle_days": _num(self.idle_days), "sort": self.sort, "order": "desc" if self.descending else "asc",
            "page": self.page,
        }
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v not in ("", None)})


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _sort_key(name: str):
    if name in ("created", "last_activity"):
        return lambda i: utc(getattr(i, name)) or _EPOCH
    return lambda i: (getattr(i, name) or "").lower()


@dataclass(frozen=True)
class Page:
    rows: list
    total: int
    page: int
    pages: int


def select_instances(instances: Iterable[Any], query: InstanceQuery, now: datetime,
                     page_size: int = PAGE_SIZE) -> Page:
    """Filter, sort (ties by owner/server, so pages are stable) and cut one page."""
    matching = [i for i in instances if query.matches(i, now)]
    matching.sort(key=lambda i: (i.owner, i.server))
    matching.sort(key=_sort_key(query.sort), reverse=query.descending)
    pages = max(1, -(-len(matching) // page_size))
    start = (query.page - 1) * page_size
    return Page(rows=matching[start:start + page_size], total=len(matching), page=query.page, pages=pages)


def summarise(instances: Sequence[Any], now: datetime, active_window: timedelta = timedelta(minutes=5)) -> dict:
    """Counts for the dashboard: by state, plan (running only) and backend, people using one now."""
    running = [i for i in instances if i.state == "running"]
    active = {i.owner for i in instances if (last := utc(i.last_activity)) and now - last <= active_window}
    return {
        "total": len(instances),
        "by_state": {s: sum(1 for i in instances if i.state == s) for s in STATES},
        "by_plan": dict(Counter(i.plan or "?" for i in running).most_common()),
        "by_backend": dict(Counter(i.backend or "?" for i in running).most_common()),
        "active_people": sorted(active),
    }


def hourly(samples: Iterable[tuple[datetime, int]], now: datetime, days: int = 7) -> list[tuple[datetime, int]]:
    """Samples bucketed per hour over the last `days` (the last sample of each hour; gaps stay gaps)."""
    since = now - timedelta(days=days)
    buckets: dict[datetime, int] = {}
    for at, value in sorted(((utc(a), v) for a, v in samples), key=lambda s: s[0]):
        if at is None or at < since or at > now:
            continue
        buckets[at.replace(minute=0, second=0, microsecond=0)] = int(value)
    return sorted(buckets.items())


def plot_svg(points: Sequence[tuple[datetime, int]], now: datetime, days: int = 7,
             width: int = 720, height: int = 180, title: str = "instances running") -> str:
    """An inline SVG line chart (no script, no CDN): hour on x over `days`, count on y."""
    pad_l, pad_r, pad_b, pad_t = 40, 20, 22, 12
    plot_w, plot_h = width - pad_l - pad_r, height - pad_b - pad_t
    start = now - timedelta(days=days)
    top = max([v for _, v in points] + [1])
    span = (now - start).total_seconds()

    def xy(at: datetime, value: int) -> str:
        x = pad_l + plot_w * (at - start).total_seconds() / span
        y = pad_t + plot_h * (1 - value / top)
        return f"{x:.1f},{y:.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="visa-plot" role="img" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}"><title>{html.escape(title)}</title>',
             f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{pad_l + plot_w}" y2="{pad_t + plot_h}" stroke="#999"/>',
             f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + plot_h}" stroke="#999"/>',
             f'<text x="{pad_l - 4}" y="{pad_t + 4}" text-anchor="end" font-size="11">{top}</text>',
             f'<text x="{pad_l - 4}" y="{pad_t + plot_h}" text-anchor="end" font-size="11">0</text>']
    for d in range(days + 1):
        at = start + timedelta(days=d)
        x = pad_l + plot_w * d / days
        parts.append(f'<text x="{x:.1f}" y="{height - 6}" text-anchor="middle" font-size="10">'
                     f'{at:%m-%d}</text>')
    if points:
        coords = [xy(at, v) for at, v in points]
        parts.append(f'<polyline fill="none" stroke="#f37524" stroke-width="2" points="{" ".join(coords)}"/>')
        if len(points) <= 48:  # few samples: show each (one alone draws no line)
            parts += [f'<circle cx="{c.split(",")[0]}" cy="{c.split(",")[1]}" r="2.5" fill="#f37524"/>'
                      for c in coords]
    else:
        parts.append(f'<text x="{pad_l + plot_w / 2}" y="{pad_t + plot_h / 2}" text-anchor="middle" '
                     'font-size="12" fill="#6c757d">no samples yet</text>')
    parts.append("</svg>")
    return "".join(parts)


@dataclass(frozen=True)
class PlanRow:
    id: str
    display_name: str
    backend: str
    gpus: int
    enabled: bool
    available: bool
    note: str


def gpus_free(capacity: Mapping | None, backend: str) -> int | None:
    """Free GPUs of a backend as the hub's capacity call reports them (``gpus_free``; a backend
    it does not name has none, as the hub's own plan offer counts); None when capacity is unknown."""
    if capacity is None:
        return None
    value = ((capacity.get("backends") or {}).get(backend) or {}).get("gpus_free", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def plan_rows(plans: Iterable[Mapping[str, Any]], disabled: set[str], capacity: Mapping | None) -> list[PlanRow]:
    """Each plan with whether it is on (the switch file) and can start now (GPU plans need a free GPU).

    The hub's capacity answer lists its own plan catalogue (``plans``): when it does, that is the
    catalogue shown; `plans` (this service's configuration) is the fallback when the hub is unreachable.
    """
    if capacity is not None and isinstance(capacity.get("plans"), list):
        plans = [p for p in capacity["plans"] if isinstance(p, Mapping) and "id" in p]
    rows = []
    for plan in plans:
        pid, backend = str(plan["id"]), str(plan.get("backend", ""))
        gpus = int(plan.get("gpus") or 0)
        enabled = pid not in disabled
        free = gpus_free(capacity, backend) if gpus else None
        if not enabled:
            available, note = False, "disabled"
        elif gpus and free is None:
            available, note = True, "GPU capacity unknown"
        elif gpus and free < gpus:
            available, note = False, "no GPU free"
        else:
            available, note = True, ""
        rows.append(PlanRow(pid, str(plan.get("display_name", pid)), backend, gpus, enabled, available, note))
    return rows
