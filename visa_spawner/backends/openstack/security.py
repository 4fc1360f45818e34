"""Security groups per instance, chosen by facility role, instrument and flavour.

The site describes groups and their rules in config (`OpenStackBackend.security_group_policies`);
`openstack_model.select_security_groups` picks the ones that apply (pure), and `SecurityGroups`
makes sure each exists in Neutron with at least its rules (created once per hub process, missing
rules added, never removing what an admin added by hand).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from visa_spawner.backends.openstack.cloud import CloudCalls
from visa_spawner.backends.openstack.model import missing_rules, select_security_groups


class SecurityGroups:
    """Ensures the configured groups through the SDK (in the backend's bounded pool)."""

    def __init__(self, calls: CloudCalls, policies: Sequence[Mapping[str, Any]], log: logging.Logger) -> None:
        self.calls, self.policies, self.log = calls, list(policies), log
        self._ensured: dict[str, asyncio.Future] = {}

    async def ensure_for(self, *, roles: Iterable[str], instruments: Iterable[str], flavor: str) -> list[str]:
        """Names of the groups for this instance, each ensured to exist with its rules."""
        chosen = select_security_groups(self.policies, roles=roles, instruments=instruments, flavor=flavor)
        for policy in chosen:
            await self.ensure(policy)
        return [str(p["name"]) for p in chosen]

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
            existing = [r.to_dict() for r in conn.network.security_group_rules(security_group_id=group.id)]
            added = missing_rules(rules, existing)
            for rule in added:
                conn.network.create_security_group_rule(security_group_id=group.id, **rule)
            return group.id, len(added)

        group_id, added = await self.calls.call(ensure, doing=f"preparing security group {name}")
        self.log.info("Security group %s (%s) ensured; %d rule(s) added", name, group_id, added)
        return group_id
