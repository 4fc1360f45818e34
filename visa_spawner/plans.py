"""The plan catalogue (image × flavour × backend), configured as plain dicts and checked once."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .backends.base import Plan

REQUIRED = ("id", "display_name", "backend", "cpus", "memory_mb")


def parse_plans(raw: Iterable[Mapping[str, Any]], backends: Iterable[str]) -> list[Plan]:
    """Turn config dicts into Plans; raise ValueError naming the bad entry and field."""
    known_backends = set(backends)
    plans: list[Plan] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        where = f"plan #{i + 1} ({entry.get('id', '?')})"
        missing = [k for k in REQUIRED if k not in entry]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        if entry["id"] in seen:
            raise ValueError(f"{where}: duplicate id")
        if entry["backend"] not in known_backends:
            raise ValueError(f"{where}: unknown backend {entry['backend']!r} (known: {sorted(known_backends)})")
        try:
            cpus, memory = float(entry["cpus"]), int(entry["memory_mb"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: cpus and memory_mb must be numbers") from e
        if cpus <= 0 or memory < 128:
            raise ValueError(f"{where}: cpus must be > 0 and memory_mb >= 128")
        seen.add(entry["id"])
        plans.append(
            Plan(
                id=str(entry["id"]), display_name=str(entry["display_name"]), backend=entry["backend"],
                cpus=cpus, memory_mb=memory, image=str(entry.get("image", "default")),
                description=str(entry.get("description", "")), default=bool(entry.get("default", False)),
                roles=tuple(entry.get("roles", ())),
            )
        )
    if plans and not any(p.default for p in plans):
        plans[0] = Plan(**{**plans[0].__dict__, "default": True})
    return plans
