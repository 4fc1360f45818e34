"""Keeping grants true to the hub and the catalogue: the periodic reconciliation.

Part of `Collaboration` (collab.py), split by responsibility; it uses that class's helpers.
A pass decides from one snapshot of the hub taken at its start (every person from the paged
listing, and the shares of the instances with grants, listed per member or per owner, whichever
is fewer), so its cost in hub requests does not grow with the number of instances: 2,000 people
and 5,000 shared instances cost about a dozen requests, not three per instance. Only the
revocations it decides on are hub writes.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import select

from . import db
from .roles import Role, may_request_support, refusal, role_of_share

log = logging.getLogger("visa_collab")


@dataclass
class HubSnapshot:
    """What one reconciliation pass knows about the hub."""

    people: dict[str, dict] = field(default_factory=dict)  # name → user model (servers, groups)
    shares: dict[tuple[str, str], dict[str, dict]] = field(default_factory=dict)  # instance → member → share

    def spawner(self, owner: str, server: str) -> dict | None:
        if not server:
            return None
        return ((self.people.get(owner) or {}).get("servers") or {}).get(server)


def _instance_of(share: dict) -> tuple[str, str] | None:
    """(owner, server) of a share item: its server model names the owner as ``user.name``."""
    server = share.get("server") or {}
    owner = (server.get("user") or {}).get("name")
    if owner and server.get("name"):
        return owner, server["name"]
    full = server.get("full_name") or ""
    return tuple(full.split("/", 1)) if "/" in full else None  # type: ignore[return-value]


class ReconcileMixin:
    """Mixed into `Collaboration`."""

    async def reconcile(self) -> int:
        """Revoke grants whose holder left the proposal (or lost their support role), and
        forget grants whose share or server no longer exists. Returns how many changed."""
        rows = await self.database.all(select(db.grants).where(db.grants.c.revoked_at.is_(None))
                                       .order_by(db.grants.c.owner, db.grants.c.server, db.grants.c.member))
        grants: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for r in rows:
            grants[(r["owner"], r["server"])].append(dict(r))
        if not grants:
            return 0
        # read after the grants: a grant recorded here already has its share in the hub
        snapshot = await self.hub_snapshot(grants)
        changed = 0
        for (owner, server), instance_grants in grants.items():
            try:
                changed += await self._reconcile_instance(snapshot, owner, server, instance_grants)
            except Exception:  # one broken instance must not stop the others
                log.exception("Reconciling the members of %s/%s failed", owner, server)
        return changed

    async def hub_snapshot(self, grants: dict[tuple[str, str], list[dict]]) -> HubSnapshot:
        """Everyone, and the shares of the granted instances that still exist, in the fewest reads."""
        snapshot = HubSnapshot(people={p["name"]: p for p in await self.hub.users() if p.get("name")})
        live = [g for key, gs in grants.items() if snapshot.spawner(*key) for g in gs]
        members = sorted({g["member"] for g in live})
        owners = sorted({g["owner"] for g in live})
        if len(members) < len(owners):
            listings = [await self.hub.shared_with(m) for m in members]
        else:
            listings = [await self.hub.owner_shares(o) for o in owners]
        for items in listings:
            for share in items:
                member = (share.get("user") or {}).get("name")  # None: a group's share
                key = _instance_of(share)
                if member and key:
                    snapshot.shares.setdefault(key, {})[member] = share
        return snapshot

    def _forget_grants(self, conn, inst_key: tuple[str, str], grants: list[dict], *, reason: str,
                       revoked_by: str, audited: bool) -> int:
        """Grants revoked here because the hub already dropped them; those revoked meanwhile
        (by the owner, during the pass) keep their own reason."""
        at, forgotten = self.now(), 0
        for g in grants:
            done = conn.execute(db.grants.update().where(
                db.grants.c.id == g["id"], db.grants.c.revoked_at.is_(None)).values(
                revoked_at=at, revoked_by=revoked_by, revoke_reason=reason))
            if done.rowcount and audited:
                self.audit(conn, inst_key, "visa-collab", "revoke", member=g["member"], role=g["role"],
                           granted_by=g["granted_by"], detail={"reason": reason}, at=at)
            forgotten += done.rowcount
        return forgotten

    async def _reconcile_instance(self, snapshot: HubSnapshot, owner: str, server: str,
                                  grants: list[dict]) -> int:
        spawner = snapshot.spawner(owner, server)
        if spawner is None:
            return await self.database.run(self._forget_grants, (owner, server), grants, reason="instance deleted",
                                           revoked_by="visa-collab", audited=False)
        inst = self._instance(owner, spawner)
        shares = snapshot.shares.get(inst.key, {})
        changed = 0
        for g in grants:
            member, role = g["member"], Role(g["role"])
            share = shares.get(member)
            if share is None or role_of_share(share.get("scopes", [])) is None:
                changed += await self.database.run(self._forget_grants, inst.key, [g], revoked_by="hub",
                                                   reason="share removed in the hub", audited=True)
                continue
            if not inst.ready and inst.key not in self.confirmed_proposals:
                continue  # stopped since before this service started: its proposal is unknown
            model = snapshot.people.get(member)
            groups = (model or {}).get("groups", [])
            if g["source"] in ("request", "policy"):
                still = model is not None and may_request_support(groups, inst.proposal)
                reason = "no longer facility support staff for this proposal"
            else:
                still = model is not None and refusal(role, member, groups, inst.proposal, server,
                                                      inst.course_trainers) is None
                reason = ("no longer facility support staff for this proposal" if role is Role.SUPPORT
                          else f"left the team of proposal {inst.proposal}")
            if not still:
                await self._revoke(inst.key, member, actor="visa-collab", reason=reason)
                changed += 1
        return changed
