"""The plan catalogue (image × flavour × backend), configured as plain dicts and checked once."""
from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
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
        gpus = entry.get("gpus", 0)
        if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
            raise ValueError(f"{where}: gpus must be a whole number >= 0")
        seen.add(entry["id"])
        plans.append(
            Plan(
                id=str(entry["id"]), display_name=str(entry["display_name"]), backend=entry["backend"],
                cpus=cpus, memory_mb=memory, image=str(entry.get("image", "default")),
                description=str(entry.get("description", "")), default=bool(entry.get("default", False)),
                roles=tuple(entry.get("roles", ())), gpus=gpus,
            )
        )
    if plans and not any(p.default for p in plans):
        plans[0] = Plan(**{**plans[0].__dict__, "default": True})
    return plans


NO_GPU_FREE = "no GPU free"
DISABLED = "disabled by the facility's administrators for now"


def unavailable_reason(plan: Plan, disabled: Collection[str], gpus_free: Mapping[str, int]) -> str:
    """Why `plan` cannot be started now ('' if it can): switched off, or its backend has too few
    GPUs free (`gpus_free`: backend → free GPUs; a backend not named has none)."""
    if plan.id in disabled:
        return DISABLED
    if plan.gpus and gpus_free.get(plan.backend, 0) < plan.gpus:
        return NO_GPU_FREE
    return ""


def plan_offer(plans: Iterable[Plan], disabled: Collection[str],
               gpus_free: Mapping[str, int]) -> list[tuple[Plan, str]]:
    """The plans the home page lists, each with why it is greyed out ('' if it is not);
    disabled plans are not listed at all."""
    return [(p, unavailable_reason(p, disabled, gpus_free)) for p in plans if p.id not in disabled]
