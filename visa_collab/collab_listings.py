"""What a person sees: my instances, shared with me, team instances, support list.

Part of `Collaboration` (collab.py), split by responsibility; it uses that class's helpers.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from . import db
from .collab_types import CollabError
from .roles import may_request_support

log = logging.getLogger("visa_collab")



class ListingsMixin:
    """Mixed into `Collaboration`."""


    # -- views over many instances ----------------------------------------------------------
    async def my_instances(self, actor: str) -> list[dict]:
        model = await self.person(actor) or {}
        out = []
        for spawner in (model.get("servers") or {}).values():
            if not spawner.get("name"):
                continue
            inst = self._instance(actor, spawner)
            out.append({**inst.model(), "members": len(await self.active_grants(actor, inst.server)),
                        "pending_requests": len(await self.requests_for(actor, inst.server, "pending")),
                        "presence": self.presence(actor, inst.server)})
        return sorted(out, key=lambda i: i["display_name"].lower())

    async def shared_with_me(self, actor: str) -> list[dict]:
        out = []
        for g in await self._my_grants(actor):
            try:
                inst = await self.instance(g["owner"], g["server"])
            except CollabError:
                continue
            out.append({**inst.model(), "role": g["role"], "granted_by": g["granted_by"]})
        return out

    async def team_instances(self, actor: str) -> list[dict]:
        """Instances of other people on the proposals I am on, with my role there if any."""
        model = await self.person(actor) or {}
        proposals = {g.split(":", 1)[1] for g in model.get("groups", []) if g.startswith("proposal:")}
        mine = {(g["owner"], g["server"]): g["role"] for g in await self._my_grants(actor)}
        seen: set[tuple[str, str]] = set()
        out = []
        for proposal in sorted(proposals):
            group = await self.hub.group(f"proposal:{proposal}") or {}
            for person in group.get("users", []):
                if person == actor:
                    continue
                pm = await self.person(person) or {}
                for spawner in (pm.get("servers") or {}).values():
                    inst = self._instance(person, spawner) if spawner.get("name") else None
                    if inst is None or inst.proposal != proposal or inst.key in seen:
                        continue
                    seen.add(inst.key)
                    out.append({**inst.model(), "my_role": mine.get(inst.key),
                                "owner_connected": self.owner_present(*inst.key)})
        return out

    async def support_instances(self, actor: str) -> list[dict]:
        """Running instances this person may ask to support."""
        model = await self.person(actor) or {}
        groups = model.get("groups", [])
        mine = {(g["owner"], g["server"]): g["role"] for g in await self._my_grants(actor)}
        out = []
        for person in await self.hub.users():
            if person["name"] == actor:
                continue
            for spawner in (person.get("servers") or {}).values():
                if not spawner.get("name") or not spawner.get("ready"):
                    continue
                inst = self._instance(person["name"], spawner)
                if may_request_support(groups, inst.proposal):
                    out.append({**inst.model(), "my_role": mine.get(inst.key),
                                "owner_connected": self.owner_present(*inst.key)})
        return sorted(out, key=lambda i: (i["owner"], i["display_name"].lower()))

    async def _my_grants(self, actor: str) -> list[dict]:
        rows = await self.database.all(select(db.grants).where(
            db.grants.c.member == actor, db.grants.c.revoked_at.is_(None)))
        return [dict(r) for r in rows]
