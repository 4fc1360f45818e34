"""Owner-away policy, presence and access requests of each instance's room.

Part of `Collaboration` (collab.py), split by responsibility; it uses that class's helpers.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from . import db
from .collab_types import CollabError, _parse_time
from .roles import DEFAULT_OWNER_AWAY, OWNER_AWAY_POLICIES, Role, may_request_support

log = logging.getLogger("visa_collab")



class RoomsMixin:
    """Mixed into `Collaboration`."""


    # -- owner-away policy ------------------------------------------------------------------
    async def policy(self, owner: str, server: str) -> str:
        row = await self.database.first(select(db.settings.c.owner_away).where(
            db.settings.c.owner == owner, db.settings.c.server == server))
        return row["owner_away"] if row else DEFAULT_OWNER_AWAY

    async def set_policy(self, actor: str, owner: str, server: str, owner_away: Any) -> dict:
        inst = await self.instance(owner, server)
        if actor != owner:
            raise await self.refuse(inst.key, actor, "set-policy", CollabError(403, "Only the owner can change this."))
        if not isinstance(owner_away, str) or owner_away not in OWNER_AWAY_POLICIES:
            raise await self.refuse(inst.key, actor, "set-policy", CollabError(
                400, f"Unknown policy {str(owner_away)[:30]!r}: choose one of {', '.join(OWNER_AWAY_POLICIES)}."))
        at = self.now()

        def save(conn) -> None:
            exists = conn.execute(select(func.count()).select_from(db.settings).where(
                db.settings.c.owner == owner, db.settings.c.server == server)).scalar()
            values = dict(owner_away=owner_away, updated_at=at, updated_by=actor)
            if exists:
                conn.execute(db.settings.update().where(
                    db.settings.c.owner == owner, db.settings.c.server == server).values(**values))
            else:
                conn.execute(db.settings.insert().values(owner=owner, server=server, **values))
            self.audit(conn, inst.key, actor, "set-policy", detail={"owner_away": owner_away}, at=at)

        await self.database.run(save)
        self.room(owner, server).bump()
        return {"owner_away": owner_away}

    # -- presence ---------------------------------------------------------------------------
    # Who is connected is what the instance reports (shown to the owner, audited as source
    # "instance"). Whether the *owner* is present -- support staff walk in, or must ask -- is
    # not taken from the instance: any code running there holds its server token and could
    # report "owner away". It is what this service sees itself: the owner's own pages (the
    # access-request prompt the desktop page loads, the Members page), signed in here as the
    # owner through the hub's OAuth, poll `pending-requests?server=` every 2 s. The server token
    # cannot make those requests (it has no access to this service).
    def presence(self, owner: str, server: str) -> list[dict]:
        """Who the instance says is connected (informational: it decides nothing here)."""
        room = self.room(owner, server)
        if self.monotonic() - room.reported_at > self.presence_ttl:
            return []
        return list(room.sessions)

    def owner_polled(self, owner: str, server: str) -> None:
        """The owner's own page, signed in to this service as the owner, asked about this instance.

        Only rooms that exist count (a running instance long-polls the service, which makes its
        room), so polls naming made-up servers leave nothing behind.
        """
        room = self.rooms.get((owner, server))
        if room is not None:
            room.owner_seen = self.monotonic()

    def owner_present(self, owner: str, server: str) -> bool:
        room = self.rooms.get((owner, server))
        return (room is not None and room.owner_seen is not None
                and self.monotonic() - room.owner_seen <= self.owner_page_ttl)

    async def report(self, owner: str, server: str, sessions: Any, events: Any) -> dict:
        """The instance's presence snapshot and its connection events (audited)."""
        room = self.room(owner, server)
        room.sessions = [
            {**{k: str(s.get(k, ""))[:255] for k in ("user", "role", "channel", "since")},
             "view_only": bool(s.get("view_only"))}
            for s in (sessions if isinstance(sessions, list) else [])[:500] if isinstance(s, dict)
        ]
        room.reported_at = self.monotonic()
        if isinstance(events, list) and events:
            grants = {g["member"]: g for g in await self.active_grants(owner, server)}
            await self.database.run(self._audit_events, owner, server, events[:500], grants)
        return await self.room_state(owner, server)

    def _audit_events(self, conn, owner: str, server: str, events: list, grants: dict[str, dict]) -> None:
        for ev in events:
            if not isinstance(ev, dict):
                continue
            member = str(ev.get("user", ""))[:255]
            grant = grants.get(member)
            self.audit(
                conn, (owner, server), member or "?", str(ev.get("event", "event"))[:48],
                member=member, role=str(ev.get("role", ""))[:16] or None,
                granted_by=grant["granted_by"] if grant else None,
                detail={k: ev[k] for k in ("channel", "reason", "dropped_input") if k in ev},
                source="instance", at=_parse_time(ev.get("at")) or self.now(),
            )

    async def room_state(self, owner: str, server: str) -> dict:
        return {"version": self.room_version(owner, server), "owner_away": await self.policy(owner, server)}

    async def wait_room(self, owner: str, server: str, version: str | None, timeout: float) -> dict:
        room = self.room(owner, server)
        if version == self.room_version(owner, server):
            try:
                await asyncio.wait_for(room.changed.wait(), timeout)
            except TimeoutError:
                pass
        return await self.room_state(owner, server)

    # -- access requests --------------------------------------------------------------------
    def _request_model(self, r) -> dict:
        status = r["status"]
        if status == "pending" and r["created_at"] + timedelta(seconds=self.request_ttl) <= self.now():
            status = "expired"
        return {"id": r["id"], "owner": r["owner"], "server": r["server"], "requester": r["requester"],
                "status": status, "created_at": db.iso(r["created_at"]), "decided_at": db.iso(r["decided_at"]),
                "decided_by": r["decided_by"]}

    async def requests_for(self, owner: str, server: str, status: str | None = None) -> list[dict]:
        rows = await self.database.all(select(db.requests).where(
            db.requests.c.owner == owner, db.requests.c.server == server,
        ).order_by(db.requests.c.id))
        out = [self._request_model(r) for r in rows]
        return [r for r in out if status is None or r["status"] == status]

    async def request_access(self, actor: str, owner: str, server: str) -> dict:
        """A support person opens an instance: in directly if the owner is away, else ask."""
        inst = await self.instance(owner, server)
        action = "request-access"
        if actor == owner:
            return {"status": "owner", "instance": inst.model()}
        current = await self.active_grant(owner, server, actor)
        if current:
            return {"status": "member", "role": current["role"], "instance": inst.model()}
        model = await self.person(actor)
        if not model or not may_request_support(model.get("groups", []), inst.proposal):
            raise await self.refuse(inst.key, actor, action, CollabError(
                403, "Only facility support staff for this proposal can ask to join this instance."), member=actor)
        if not inst.ready:
            raise await self.refuse(inst.key, actor, action,
                                    CollabError(409, "This instance is not running."), member=actor)
        if not self.owner_present(owner, server):
            grant = await self._grant(inst, actor, Role.SUPPORT, actor=actor, granted_by="facility role",
                                      source="policy", action=action, detail={"owner_connected": False})
            return {"status": "full", "role": grant["role"], "instance": inst.model()}
        pending = [r for r in await self.requests_for(owner, server, "pending") if r["requester"] == actor]
        if pending:
            return {**pending[-1], "instance": inst.model()}
        at = self.now()

        def record(conn) -> int:
            rid = conn.execute(db.requests.insert().values(
                owner=owner, server=server, requester=actor, status="pending", created_at=at,
            )).inserted_primary_key[0]
            self.audit(conn, inst.key, actor, action, member=actor, detail={"request": rid, "owner_connected": True},
                       at=at)
            return rid

        rid = await self.database.run(record)
        self.room(owner, server).bump()
        self.events.request_changed(rid, owner, server, actor, expires_in=self.request_ttl)
        return {**(await self.request(rid)), "instance": inst.model()}

    async def request(self, rid: int) -> dict:
        row = await self.database.first(select(db.requests).where(db.requests.c.id == rid))
        if row is None:
            raise CollabError(404, "No such access request.")
        return self._request_model(row)

    async def request_status(self, actor: str, rid: int) -> dict:
        req = await self.request(rid)
        if actor not in (req["requester"], req["owner"]) and not await self.is_admin(actor):
            raise CollabError(404, "No such access request.")
        return req

    async def decide(self, actor: str, rid: int, decision: Any) -> dict:
        req = await self.request(rid)
        inst_key = (req["owner"], req["server"])
        action = "decide-request"
        if actor != req["owner"]:
            raise await self.refuse(inst_key, actor, action,
                                    CollabError(403, "Only the owner can answer this request."),
                                    member=req["requester"], detail={"request": rid})
        roles = {"full": Role.SUPPORT, "read-only": Role.GUEST, "reject": None}
        if not isinstance(decision, str) or decision not in roles:
            raise await self.refuse(inst_key, actor, action, CollabError(
                400, "Answer with full, read-only or reject."), member=req["requester"], detail={"request": rid})
        if req["status"] != "pending":
            raise await self.refuse(inst_key, actor, action,
                                    CollabError(409, f"This request is already {req['status']}."),
                                    member=req["requester"], detail={"request": rid})
        role = roles[decision]
        if role is not None:
            inst = await self.instance(*inst_key)
            await self._grant(inst, req["requester"], role, actor=actor, granted_by=actor, source="request",
                              action=action, detail={"request": rid, "decision": decision})
        else:
            await self.database.run(self.audit, inst_key, actor, action, member=req["requester"],
                                    detail={"request": rid, "decision": decision})

        def record(conn) -> None:
            conn.execute(db.requests.update().where(db.requests.c.id == rid).values(
                status="rejected" if role is None else decision, decided_at=self.now(), decided_by=actor))

        await self.database.run(record)
        self.room(*inst_key).bump()
        self.events.request_changed(rid, *inst_key, req["requester"])
        return await self.request(rid)
