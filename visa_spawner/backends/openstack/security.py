"""Security groups per instance, chosen by facility role, instrument and flavour.

The site describes groups and their rules in config (`OpenStackBackend.security_group_policies`);
`openstack_model.select_security_groups` picks the ones that apply (pure), and `SecurityGroups`
makes sure each exists in Neutron with at least its rules (created once per hub process, missing
rules added, never removing what an admin added by hand).

Instrument control (issue 18, part 3): `OpenStackBackend.instrument_security_groups` gives per
instrument the rules that open the way to its gateway or instrument network. Its group,
`visa-instrument-<id>`, is created with those rules only (Neutron's default allow-all egress
rules of a new group are removed) and is on a server only while the proposal's experiment window
is open: at create when the spawner says so (`InstanceSpec.instrument_control`), and later through
`set_instrument_access` on the server's Neutron ports (whoever follows the windows calls it).
"""
from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from visa_spawner.backends.openstack.cloud import CloudCalls
from visa_spawner.backends.openstack.model import missing_rules, rule_key, select_security_groups

INSTRUMENT_GROUP_PREFIX = "visa-instrument-"


def instrument_group_name(instrument: str) -> str:
    """`visa-instrument-<id>` (Neutron names are free text; ours stay readable and tag-safe)."""
    return INSTRUMENT_GROUP_PREFIX + (re.sub(r"[^A-Za-z0-9._-]+", "-", instrument).strip("-")[:64] or "x")


def instrument_policy(instrument: str, rules: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The group of one instrument: its rules are egress unless they say otherwise."""
    return {"name": instrument_group_name(instrument), "exclusive": True,
            "description": f"VISA: the way to instrument {instrument}, open during its experiments",
            "rules": [{"direction": "egress", **r} for r in rules]}


class SecurityGroups:
    """Ensures the configured groups through the SDK (in the backend's bounded pool)."""

    def __init__(self, calls: CloudCalls, policies: Sequence[Mapping[str, Any]], log: logging.Logger,
                 instrument_rules: Mapping[str, Sequence[Mapping[str, Any]]] | None = None) -> None:
        self.calls, self.policies, self.log = calls, list(policies), log
        self.instruments = {str(i): instrument_policy(str(i), r) for i, r in (instrument_rules or {}).items()}
        self._ensured: dict[str, asyncio.Future] = {}

    async def ensure_for(self, *, roles: Iterable[str], instruments: Iterable[str], flavor: str,
                         open_instruments: Iterable[str] = ()) -> list[str]:
        """Names of the groups for this instance, each ensured to exist with its rules; the
        instrument groups of `open_instruments` (control window open now) among them."""
        instruments = list(instruments)
        chosen = select_security_groups(self.policies, roles=roles, instruments=instruments, flavor=flavor)
        chosen += [self.instruments[i] for i in dict.fromkeys(open_instruments)
                   if i in instruments and i in self.instruments]
        for policy in chosen:
            await self.ensure(policy)
        return [str(p["name"]) for p in chosen]

    async def set_instrument_access(self, server_id: str, instrument: str, allowed: bool) -> bool:
        """Attach (`allowed`) or detach the instrument's group on every Neutron port of the server,
        as the experiment window opens or closes; idempotent. False: the instrument has no group
        configured (nothing to open, and nothing open)."""
        policy = self.instruments.get(instrument)
        if policy is None:
            return False
        group_id = await self.ensure(policy)

        def update(conn) -> int:
            changed = 0
            for port in conn.network.ports(device_id=server_id):
                groups = list(port.security_group_ids or [])
                wanted = (groups + [group_id]) if allowed else [g for g in groups if g != group_id]
                if set(wanted) != set(groups):
                    conn.network.update_port(port, security_group_ids=wanted)
                    changed += 1
            return changed

        changed = await self.calls.call(update, doing=f"{'opening' if allowed else 'closing'} {policy['name']}")
        self.log.info("Server %s: %s %s on %d port(s)", server_id, policy["name"],
                      "attached" if allowed else "detached", changed)
        return True

    async def ensure(self, policy: Mapping[str, Any]) -> str:
        """Create the group if missing and add missing rules; once per process (shared future)."""
        name = str(policy["name"])
        if name not in self._ensured or (self._ensured[name].done() and self._ensured[name].exception()):
            self._ensured[name] = asyncio.ensure_future(self._ensure(policy))
        return await asyncio.shield(self._ensured[name])

    async def _ensure(self, policy: Mapping[str, Any]) -> str:
        name, rules = str(policy["name"]), list(policy.get("rules", []))

        def ensure(conn) -> tuple[str, int]:
            group = conn.network.find_security_group(name, ignore_missing=True)
            if group is None:
                group = conn.network.create_security_group(
                    name=name, description=str(policy.get("description", "VISA instances (managed by the hub)")))
                if policy.get("exclusive"):  # only its own rules: not Neutron's allow-all egress defaults
                    for rule in conn.network.security_group_rules(security_group_id=group.id):
                        if rule_key(rule.to_dict()) not in {rule_key(r) for r in rules}:
                            conn.network.delete_security_group_rule(rule)
            existing = [r.to_dict() for r in conn.network.security_group_rules(security_group_id=group.id)]
            added = missing_rules(rules, existing)
            for rule in added:
                conn.network.create_security_group_rule(security_group_id=group.id, **rule)
            return group.id, len(added)

        group_id, added = await self.calls.call(ensure, doing=f"preparing security group {name}")
        self.log.info("Security group %s (%s) ensured; %d rule(s) added", name, group_id, added)
        return group_id
