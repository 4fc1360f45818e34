"""`GET /hub/api/visa/capacity`: what each backend of the plan catalogue can still take (admins).

For the ops console's dashboard and plans page. Per backend: the backend's own `capacity()`
(sandbox host, qemu slots and acceleration, OpenStack quota) plus the hub's instances on it by
state; per plan: switched on or off, and available now or why not ("no GPU free").

    {"backends": {"sandbox": {"instances_running": 1, "instances": {"running": 1, "pending": 0,
                              "stopped": 2}, "gpus_free": 0, "host": {...}}, ...},
     "plans": [{"id", "display_name", "backend", "gpus", "enabled", "available", "why"}]}
"""
from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

from jupyterhub.apihandlers import APIHandler
from jupyterhub.scopes import needs_scope

from .backends.base import Backend, Plan
from .metrics import STATES, hub_instance_rows
from .plan_switch import read_disabled
from .plans import unavailable_reason
from .spawner import check_plans, hub_backend

#: seconds one backend may take to answer (an OpenStack quota call) before it is reported unknown
BACKEND_TIMEOUT = 15


async def backend_capacity(backend: Backend, timeout: float = BACKEND_TIMEOUT) -> dict[str, Any]:
    """The backend's own answer, or why there is none (a dashboard must render anyway)."""
    try:
        answer = await asyncio.wait_for(backend.capacity(), timeout)
    except TimeoutError:
        return {"gpus_free": 0, "error": f"no answer within {timeout:g} s"}
    except Exception as e:
        backend.log.exception("Capacity of %s failed", type(backend).__name__)
        return {"gpus_free": 0, "error": getattr(e, "message", None) or type(e).__name__}
    return {"gpus_free": 0, **answer}


def capacity_report(plans: list[Plan], answers: dict[str, dict], rows: list[tuple[str, str, str]],
                    disabled: set[str]) -> dict[str, Any]:
    """The handler's JSON from the backends' answers and the hub's instance rows (pure)."""
    per_backend = Counter((backend, state) for state, _plan, backend in rows)
    backends = {}
    for name, answer in answers.items():
        counts = {state: per_backend[(name, state)] for state in STATES}
        backends[name] = {"instances_running": counts["running"], "instances": counts, **answer}
    gpus_free = {name: int(answer.get("gpus_free", 0)) for name, answer in answers.items()}
    offer = []
    for plan in plans:
        why = unavailable_reason(plan, disabled, gpus_free)
        offer.append({"id": plan.id, "display_name": plan.display_name, "backend": plan.backend, "gpus": plan.gpus,
                      "enabled": plan.id not in disabled, "available": not why, "why": why})
    return {"backends": backends, "plans": offer}


class CapacityHandler(APIHandler):
    """GET /hub/api/visa/capacity: admins, and services that may read every server (the visa-ops
    console's token): `read:servers` unfiltered, which `admin:servers` includes. A person's own
    `read:servers!user=...` is not enough (403)."""

    @needs_scope("read:servers")
    async def get(self) -> None:
        plans = check_plans(self.config)
        names = sorted({p.backend for p in plans})
        results = await asyncio.gather(*(backend_capacity(hub_backend(n, self.config, self.log)) for n in names))
        switch_file = self.config.get("VisaSpawner", {}).get("plan_switch_file", "")
        disabled = read_disabled(switch_file) if switch_file else set()
        report = capacity_report(plans, dict(zip(names, results, strict=True)), hub_instance_rows(), disabled)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(report))
