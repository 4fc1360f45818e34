"""What the collaboration service does, independent of HTTP: members, invitations, access
requests, owner-away policy, presence and the audit log of each instance.

Grants are JupyterHub shares made through the hub's REST API (`HubAPI`); this module decides
*whether* to make them and records who asked, why, and what happened — refusals included.
Every public method takes the acting person's name first and checks their right to act.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from . import db
from .hubapi import HubAPI, HubError
from .roles import (
    DEFAULT_OWNER_AWAY, GRANTABLE, OWNER_AWAY_POLICIES, Role, RoleError, may_request_support,
    on_team, parse_role, refusal, role_of_share, share_scopes,
)

log = logging.getLogger("visa_collab")

CODE_PREFIX = "vi_"


class CollabError(Exception):
    """A refusal a person can act on: an HTTP status and a plain message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Instance:
    owner: str
    server: str
    display_name: str
    proposal: str | None
    ready: bool
    url: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.owner, self.server)

    def model(self) -> dict:
        return {"owner": self.owner, "server": self.server, "display_name": self.display_name,
                "proposal": self.proposal, "ready": self.ready, "url": self.url}


@dataclass
class Room:
    """Live state of one instance, in memory: what its Jupyter server last reported."""

    version: int = 0
    sessions: list[dict] = field(default_factory=list)  # {user, role, channel, since}
    reported_at: float = 0.0  # monotonic
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def bump(self) -> None:
        self.version += 1
        self.changed.set()
        self.changed = asyncio.Event()


def hash_code(code: str) -> str:
    return hashlib.sha256(code.encode("utf8", "replace")).hexdigest()


class Collaboration:
    def __init__(
        self, engine: Engine, hub: HubAPI, *, service_prefix: str = "/services/visa-collab/",
        presence_ttl: float = 45.0, request_ttl: float = 300.0,
        monotonic: Callable[[], float] = time.monotonic, now: Callable[[], datetime] = db.now,
    ) -> None:
        self.engine, self.hub = engine, hub
        self.service_prefix = service_prefix
        self.presence_ttl, self.request_ttl = presence_ttl, request_ttl
        self.monotonic, self.now = monotonic, now
        self.rooms: dict[tuple[str, str], Room] = {}
        # distinguishes this process's room versions from a previous one's
        self.epoch = secrets.token_hex(4)

    # -- look-ups ---------------------------------------------------------------------------
    async def person(self, name: str) -> dict | None:
        try:
            return await self.hub.user(name)
        except HubError as e:
            if e.status == 400:  # not a valid user name at all
                return None
            raise

    async def is_admin(self, name: str) -> bool:
        model = await self.person(name)
        return bool(model and (model.get("admin") or "role:admin" in model.get("groups", [])))

    async def instance(self, owner: str, server: str) -> Instance:
        model = await self.person(owner)
        spawner = (model or {}).get("servers", {}).get(server) if server else None
        if not spawner:
            raise CollabError(404, f"No instance {owner}/{server}.")
        return self._instance(owner, spawner)

    @staticmethod
    def _instance(owner: str, spawner: dict) -> Instance:
        return Instance(
            owner=owner, server=spawner["name"],
            display_name=spawner.get("display_name") or spawner["name"],
            proposal=(spawner.get("user_options") or {}).get("proposal"),
            ready=bool(spawner.get("ready")), url=spawner.get("url") or "",
        )

    def room(self, owner: str, server: str) -> Room:
        return self.rooms.setdefault((owner, server), Room())

    def room_version(self, owner: str, server: str) -> str:
        return f"{self.epoch}.{self.room(owner, server).version}"

    async def _require_owner(self, actor: str, inst: Instance, allow_admin: bool = False) -> None:
        if actor == inst.owner:
            return
        if allow_admin and await self.is_admin(actor):
            return
        raise CollabError(403, "Only the owner of this instance can do that.")

    # -- audit ------------------------------------------------------------------------------
    def audit(self, conn, inst_key: tuple[str, str], actor: str, action: str, *, member: str | None = None,
              role: str | None = None, granted_by: str | None = None, outcome: str = "ok",
              detail: dict | None = None, source: str = "service", at: datetime | None = None) -> None:
        conn.execute(db.audit.insert().values(
            owner=inst_key[0], server=inst_key[1], at=at or self.now(), actor=actor, action=action,
            member=member, role=role, granted_by=granted_by, outcome=outcome,
            detail=db.dumps(detail), source=source,
        ))

    def refuse(self, inst_key: tuple[str, str], actor: str, action: str, error: CollabError, **kw: Any) -> CollabError:
        """Record a refusal in the instance's audit log and return the error to raise."""
        with self.engine.begin() as conn:
            self.audit(conn, inst_key, actor, action, outcome="refused",
                       detail={"reason": error.message, **kw.pop("detail", {})}, **kw)
        return error

    async def audit_log(self, actor: str, owner: str, server: str, limit: int = 500) -> list[dict]:
        if actor != owner and not await self.is_admin(actor):
            raise CollabError(403, "Only the owner of this instance and administrators can read its audit log.")
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(db.audit).where(db.audit.c.owner == owner, db.audit.c.server == server)
                .order_by(db.audit.c.at.desc(), db.audit.c.id.desc()).limit(limit)
            ).mappings().all()
        return [self._audit_model(r) for r in rows]

    @staticmethod
    def _audit_model(r) -> dict:
        return {
            "id": r["id"], "at": db.iso(r["at"]), "actor": r["actor"], "action": r["action"],
            "member": r["member"], "role": r["role"], "granted_by": r["granted_by"],
            "outcome": r["outcome"], "detail": json.loads(r["detail"]) if r["detail"] else {},
            "source": r["source"],
        }

    # -- grants -----------------------------------------------------------------------------
    def _active_grant(self, conn, owner: str, server: str, member: str):
        return conn.execute(select(db.grants).where(
            db.grants.c.owner == owner, db.grants.c.server == server, db.grants.c.member == member,
            db.grants.c.revoked_at.is_(None),
        ).order_by(db.grants.c.id.desc())).mappings().first()

    def active_grants(self, owner: str, server: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(db.grants).where(
                db.grants.c.owner == owner, db.grants.c.server == server, db.grants.c.revoked_at.is_(None),
            ).order_by(db.grants.c.member)).mappings().all()
        return [dict(r) for r in rows]

    async def _hub_grant(self, inst: Instance, member: str, role: Role, previous: Role | None) -> None:
        await self.hub.grant(inst.owner, inst.server, member, share_scopes(role, inst.owner, inst.server))
        if previous and previous is not role:
            old = share_scopes(previous, inst.owner, inst.server)[1:]  # keep access, drop the old role
            await self.hub.revoke(inst.owner, inst.server, member, old)

    async def _grant(self, inst: Instance, member: str, role: Role, *, actor: str, granted_by: str,
                     source: str, action: str, detail: dict | None = None) -> dict:
        with self.engine.connect() as conn:
            current = self._active_grant(conn, inst.owner, inst.server, member)
        previous = Role(current["role"]) if current else None
        try:
            await self._hub_grant(inst, member, role, previous)
        except HubError as e:
            log.error("Granting %s on %s/%s to %s failed: %s", role.value, inst.owner, inst.server, member, e)
            raise self.refuse(inst.key, actor, action, CollabError(502, "The hub refused the grant; nothing was changed."),
                              member=member, role=role.value, detail={"hub_status": e.status}) from None
        at = self.now()
        with self.engine.begin() as conn:
            if current:
                conn.execute(db.grants.update().where(db.grants.c.id == current["id"]).values(
                    revoked_at=at, revoked_by=actor, revoke_reason=f"role changed to {role.value}"))
            conn.execute(db.grants.insert().values(
                owner=inst.owner, server=inst.server, member=member, role=role.value, granted_by=granted_by,
                source=source, created_at=at))
            self.audit(conn, inst.key, actor, action, member=member, role=role.value, granted_by=granted_by,
                       detail={**({"previous_role": previous.value} if previous else {}), **(detail or {})}, at=at)
        self.room(inst.owner, inst.server).bump()
        return {"member": member, "role": role.value, "granted_by": granted_by, "source": source,
                "created_at": db.iso(at)}

    async def _revoke(self, inst_key: tuple[str, str], member: str, *, actor: str, reason: str,
                      action: str = "revoke") -> None:
        owner, server = inst_key
        try:
            await self.hub.revoke(owner, server, member)
        except HubError as e:
            if e.status != 404:  # the server is gone: its shares went with it
                raise
        at = self.now()
        with self.engine.begin() as conn:
            current = self._active_grant(conn, owner, server, member)
            if current:
                conn.execute(db.grants.update().where(db.grants.c.id == current["id"]).values(
                    revoked_at=at, revoked_by=actor, revoke_reason=reason))
            self.audit(conn, inst_key, actor, action, member=member,
                       role=current["role"] if current else None,
                       granted_by=current["granted_by"] if current else None, detail={"reason": reason}, at=at)
        self.room(owner, server).bump()

    async def _check_member(self, actor: str, inst: Instance, member: Any, role: Role, action: str) -> dict:
        """The member's hub model, or a recorded refusal."""
        if not isinstance(member, str) or not member.strip():
            raise self.refuse(inst.key, actor, action, CollabError(400, "Say who to share with."))
        member = member.strip()
        if member == inst.owner:
            raise self.refuse(inst.key, actor, action, CollabError(400, "You cannot share an instance with yourself."),
                              member=member, role=role.value)
        model = await self.person(member)
        if model is None:
            raise self.refuse(inst.key, actor, action, CollabError(
                404, f"Nobody called {member[:60]!r} has used VISA: they must log in once before you can add them."),
                member=member[:255], role=role.value)
        why = refusal(role, member, model.get("groups", []), inst.proposal)
        if why:
            raise self.refuse(inst.key, actor, action, CollabError(403, why), member=member, role=role.value)
        return model

    def _role(self, inst: Instance, actor: str, value: Any, action: str, member: str | None = None) -> Role:
        try:
            return parse_role(value)
        except RoleError as e:
            raise self.refuse(inst.key, actor, action, CollabError(400, str(e)),
                              member=member, detail={"role": str(value)[:40]}) from None

    async def members(self, actor: str, owner: str, server: str) -> dict:
        inst = await self.instance(owner, server)
        await self._require_owner(actor, inst, allow_admin=True)
        grants = self.active_grants(owner, server)
        return {
            "instance": inst.model(),
            "members": [{"member": g["member"], "role": g["role"], "granted_by": g["granted_by"],
                         "source": g["source"], "created_at": db.iso(g["created_at"])} for g in grants],
            "policy": self.policy(owner, server),
            "presence": self.presence(owner, server),
            "invitations": self.invitations(owner, server),
            "requests": self.requests_for(owner, server, status="pending"),
            "roles": [{"value": r.value, "label": r.label} for r in GRANTABLE],
            "owner_away_policies": OWNER_AWAY_POLICIES,
        }

    async def add_member(self, actor: str, owner: str, server: str, member: Any, role: Any) -> dict:
        inst = await self.instance(owner, server)
        action = "grant"
        if actor != owner:
            raise self.refuse(inst.key, actor, action, CollabError(403, "Only the owner of this instance can share it."),
                              member=str(member)[:255] if member else None)
        r = self._role(inst, actor, role, action, member=str(member)[:255] if member else None)
        model = await self._check_member(actor, inst, member, r, action)
        with self.engine.connect() as conn:
            current = self._active_grant(conn, owner, server, model["name"])
        if current:
            raise self.refuse(inst.key, actor, action, CollabError(
                409, f"{model['name']} is already a member ({current['role']}): change their role instead."),
                member=model["name"], role=r.value)
        return await self._grant(inst, model["name"], r, actor=actor, granted_by=actor, source="direct", action=action)

    async def change_role(self, actor: str, owner: str, server: str, member: str, role: Any) -> dict:
        inst = await self.instance(owner, server)
        action = "change-role"
        if actor != owner:
            raise self.refuse(inst.key, actor, action, CollabError(403, "Only the owner of this instance can change roles."),
                              member=member)
        r = self._role(inst, actor, role, action, member=member)
        with self.engine.connect() as conn:
            current = self._active_grant(conn, owner, server, member)
        if not current:
            raise self.refuse(inst.key, actor, action, CollabError(404, f"{member[:60]} is not a member of this instance."),
                              member=member[:255])
        if current["role"] == r.value:
            return {"member": member, "role": r.value, "granted_by": current["granted_by"], "unchanged": True}
        await self._check_member(actor, inst, member, r, action)
        return await self._grant(inst, member, r, actor=actor, granted_by=actor, source="direct", action=action)

    async def remove_member(self, actor: str, owner: str, server: str, member: str) -> None:
        inst = await self.instance(owner, server)
        action = "revoke"
        if actor != owner:
            raise self.refuse(inst.key, actor, action, CollabError(403, "Only the owner of this instance can remove members."),
                              member=member)
        with self.engine.connect() as conn:
            current = self._active_grant(conn, owner, server, member)
        if not current:
            raise self.refuse(inst.key, actor, action, CollabError(404, f"{member[:60]} is not a member of this instance."),
                              member=member[:255])
        await self._revoke(inst.key, member, actor=actor, reason="removed by the owner")

    # -- invitations ------------------------------------------------------------------------
    def invitations(self, owner: str, server: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(db.invitations).where(
                db.invitations.c.owner == owner, db.invitations.c.server == server,
                db.invitations.c.revoked_at.is_(None), db.invitations.c.expires_at > self.now(),
                db.invitations.c.uses < db.invitations.c.max_uses,
            ).order_by(db.invitations.c.id)).mappings().all()
        return [self._invitation_model(r) for r in rows]

    @staticmethod
    def _invitation_model(r) -> dict:
        return {"id": r["id"], "role": r["role"], "created_by": r["created_by"], "created_at": db.iso(r["created_at"]),
                "expires_at": db.iso(r["expires_at"]), "max_uses": r["max_uses"], "uses": r["uses"]}

    async def invite(self, actor: str, owner: str, server: str, role: Any, expires_in: Any = 86400,
                     max_uses: Any = 1) -> dict:
        inst = await self.instance(owner, server)
        action = "invite"
        if actor != owner:
            raise self.refuse(inst.key, actor, action, CollabError(403, "Only the owner of this instance can invite."))
        r = self._role(inst, actor, role, action)
        if r is Role.SUPPORT:
            raise self.refuse(inst.key, actor, action, CollabError(
                400, "Support access is given on request or by name, not by invitation link."), role=r.value)
        try:
            expires_in, max_uses = int(expires_in), int(max_uses)
        except (TypeError, ValueError):
            raise self.refuse(inst.key, actor, action, CollabError(400, "expires_in and max_uses must be whole numbers."),
                              role=r.value) from None
        if not 60 <= expires_in <= 30 * 86400:
            raise self.refuse(inst.key, actor, action, CollabError(
                400, "An invitation must expire in between one minute and 30 days."), role=r.value)
        if not 1 <= max_uses <= 100:
            raise self.refuse(inst.key, actor, action, CollabError(400, "An invitation is good for 1 to 100 people."),
                              role=r.value)
        code = CODE_PREFIX + secrets.token_urlsafe(24)
        at = self.now()
        with self.engine.begin() as conn:
            row_id = conn.execute(db.invitations.insert().values(
                owner=owner, server=server, role=r.value, code_hash=hash_code(code), created_by=actor,
                created_at=at, expires_at=at + timedelta(seconds=expires_in), max_uses=max_uses, uses=0,
            )).inserted_primary_key[0]
            self.audit(conn, inst.key, actor, action, role=r.value,
                       detail={"invitation": row_id, "expires_in": expires_in, "max_uses": max_uses}, at=at)
        return {"id": row_id, "role": r.value, "code": code, "url": f"{self.service_prefix}invite?code={code}",
                "expires_at": db.iso(at + timedelta(seconds=expires_in)), "max_uses": max_uses}

    async def revoke_invitation(self, actor: str, owner: str, server: str, invitation_id: int) -> None:
        inst = await self.instance(owner, server)
        if actor != owner:
            raise self.refuse(inst.key, actor, "revoke-invitation", CollabError(403, "Only the owner can revoke invitations."))
        with self.engine.begin() as conn:
            n = conn.execute(db.invitations.update().where(
                db.invitations.c.id == invitation_id, db.invitations.c.owner == owner,
                db.invitations.c.server == server, db.invitations.c.revoked_at.is_(None),
            ).values(revoked_at=self.now())).rowcount
            if not n:
                raise CollabError(404, "No such invitation.")
            self.audit(conn, inst.key, actor, "revoke-invitation", detail={"invitation": invitation_id})

    def _find_invitation(self, code: Any):
        if not isinstance(code, str) or not code.startswith(CODE_PREFIX) or len(code) > 100:
            return None
        with self.engine.connect() as conn:
            return conn.execute(select(db.invitations).where(
                db.invitations.c.code_hash == hash_code(code))).mappings().first()

    async def describe_invitation(self, actor: str, code: Any) -> dict:
        """What accepting would give (for the confirmation page); refusals are not consumed."""
        inv = self._find_invitation(code)
        if inv is None:
            raise CollabError(404, "This invitation link is not valid. Ask the instance owner for a new one.")
        inst = await self.instance(inv["owner"], inv["server"])
        problem = self._invitation_problem(inv)
        return {"instance": inst.model(), "role": inv["role"], "role_label": Role(inv["role"]).label,
                "expires_at": db.iso(inv["expires_at"]), "problem": problem}

    def _invitation_problem(self, inv) -> str | None:
        if inv["revoked_at"] is not None:
            return "This invitation has been withdrawn by the instance owner."
        if inv["expires_at"] <= self.now():
            return "This invitation has expired. Ask the instance owner for a new one."
        if inv["uses"] >= inv["max_uses"]:
            return "This invitation has already been used. Ask the instance owner for a new one."
        return None

    async def accept_invitation(self, actor: str, code: Any) -> dict:
        inv = self._find_invitation(code)
        if inv is None:
            log.info("Invalid invitation code presented by %s", actor)
            raise CollabError(404, "This invitation link is not valid. Ask the instance owner for a new one.")
        inst_key = (inv["owner"], inv["server"])
        action = "accept-invitation"
        detail = {"invitation": inv["id"]}
        problem = self._invitation_problem(inv)
        if problem:
            raise self.refuse(inst_key, actor, action, CollabError(410, problem), member=actor, role=inv["role"],
                              detail=detail)
        try:
            inst = await self.instance(*inst_key)
        except CollabError as e:
            raise self.refuse(inst_key, actor, action, e, member=actor, detail=detail) from None
        role = Role(inv["role"])
        await self._check_member(actor, inst, actor, role, action)
        with self.engine.connect() as conn:
            current = self._active_grant(conn, inst.owner, inst.server, actor)
        if current and _rank(Role(current["role"])) >= _rank(role):
            # already at least as much: do not spend a use of the link
            return {"instance": inst.model(), "role": current["role"], "unchanged": True}
        with self.engine.begin() as conn:  # spend one use first, atomically: no over-use under races
            spent = conn.execute(db.invitations.update().where(
                db.invitations.c.id == inv["id"], db.invitations.c.uses < db.invitations.c.max_uses,
                db.invitations.c.revoked_at.is_(None), db.invitations.c.expires_at > self.now(),
            ).values(uses=db.invitations.c.uses + 1)).rowcount
        if not spent:
            raise self.refuse(inst_key, actor, action, CollabError(
                410, "This invitation has already been used. Ask the instance owner for a new one."),
                member=actor, role=role.value, detail=detail)
        grant = await self._grant(inst, actor, role, actor=actor, granted_by=inv["created_by"],
                                  source="invitation", action=action, detail=detail)
        return {"instance": inst.model(), **grant}

    # -- owner-away policy ------------------------------------------------------------------
    def policy(self, owner: str, server: str) -> str:
        with self.engine.connect() as conn:
            row = conn.execute(select(db.settings.c.owner_away).where(
                db.settings.c.owner == owner, db.settings.c.server == server)).first()
        return row[0] if row else DEFAULT_OWNER_AWAY

    async def set_policy(self, actor: str, owner: str, server: str, owner_away: Any) -> dict:
        inst = await self.instance(owner, server)
        if actor != owner:
            raise self.refuse(inst.key, actor, "set-policy", CollabError(403, "Only the owner can change this."))
        if owner_away not in OWNER_AWAY_POLICIES:
            raise self.refuse(inst.key, actor, "set-policy", CollabError(
                400, f"Unknown policy {str(owner_away)[:30]!r}: choose one of {', '.join(OWNER_AWAY_POLICIES)}."))
        at = self.now()
        with self.engine.begin() as conn:
            exists = conn.execute(select(func.count()).select_from(db.settings).where(
                db.settings.c.owner == owner, db.settings.c.server == server)).scalar()
            values = dict(owner_away=owner_away, updated_at=at, updated_by=actor)
            if exists:
                conn.execute(db.settings.update().where(
                    db.settings.c.owner == owner, db.settings.c.server == server).values(**values))
            else:
                conn.execute(db.settings.insert().values(owner=owner, server=server, **values))
            self.audit(conn, inst.key, actor, "set-policy", detail={"owner_away": owner_away}, at=at)
        self.room(owner, server).bump()
        return {"owner_away": owner_away}

    # -- presence (reported by the instance) ------------------------------------------------
    def presence(self, owner: str, server: str) -> list[dict]:
        room = self.room(owner, server)
        if self.monotonic() - room.reported_at > self.presence_ttl:
            return []
        return list(room.sessions)

    def owner_present(self, owner: str, server: str) -> bool:
        return any(s.get("user") == owner for s in self.presence(owner, server))

    def report(self, owner: str, server: str, sessions: Any, events: Any) -> dict:
        """The instance's presence snapshot and its connection events (audited)."""
        room = self.room(owner, server)
        room.sessions = [
            {**{k: str(s.get(k, ""))[:255] for k in ("user", "role", "channel", "since")},
             "view_only": bool(s.get("view_only"))}
            for s in (sessions if isinstance(sessions, list) else [])[:500] if isinstance(s, dict)
        ]
        room.reported_at = self.monotonic()
        if isinstance(events, list) and events:
            grants = {g["member"]: g for g in self.active_grants(owner, server)}
            with self.engine.begin() as conn:
                for ev in events[:500]:
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
        return self.room_state(owner, server)

    def room_state(self, owner: str, server: str) -> dict:
        return {"version": self.room_version(owner, server), "owner_away": self.policy(owner, server)}

    async def wait_room(self, owner: str, server: str, version: str | None, timeout: float) -> dict:
        room = self.room(owner, server)
        if version == self.room_version(owner, server):
            try:
                await asyncio.wait_for(room.changed.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        return self.room_state(owner, server)

    # -- access requests --------------------------------------------------------------------
    def _request_model(self, r) -> dict:
        status = r["status"]
        if status == "pending" and r["created_at"] + timedelta(seconds=self.request_ttl) <= self.now():
            status = "expired"
        return {"id": r["id"], "owner": r["owner"], "server": r["server"], "requester": r["requester"],
                "status": status, "created_at": db.iso(r["created_at"]), "decided_at": db.iso(r["decided_at"]),
                "decided_by": r["decided_by"]}

    def requests_for(self, owner: str, server: str, status: str | None = None) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(db.requests).where(
                db.requests.c.owner == owner, db.requests.c.server == server,
            ).order_by(db.requests.c.id)).mappings().all()
        out = [self._request_model(r) for r in rows]
        return [r for r in out if status is None or r["status"] == status]

    async def request_access(self, actor: str, owner: str, server: str) -> dict:
        """A support person opens an instance: in directly if the owner is away, else ask."""
        inst = await self.instance(owner, server)
        action = "request-access"
        if actor == owner:
            return {"status": "owner", "instance": inst.model()}
        with self.engine.connect() as conn:
            current = self._active_grant(conn, owner, server, actor)
        if current:
            return {"status": "member", "role": current["role"], "instance": inst.model()}
        model = await self.person(actor)
        if not model or not may_request_support(model.get("groups", []), inst.proposal):
            raise self.refuse(inst.key, actor, action, CollabError(
                403, "Only facility support staff for this proposal can ask to join this instance."), member=actor)
        if not inst.ready:
            raise self.refuse(inst.key, actor, action, CollabError(409, "This instance is not running."), member=actor)
        if not self.owner_present(owner, server):
            grant = await self._grant(inst, actor, Role.SUPPORT, actor=actor, granted_by="facility role",
                                      source="policy", action=action, detail={"owner_connected": False})
            return {"status": "full", "role": grant["role"], "instance": inst.model()}
        pending = [r for r in self.requests_for(owner, server, "pending") if r["requester"] == actor]
        if pending:
            return {**pending[-1], "instance": inst.model()}
        at = self.now()
        with self.engine.begin() as conn:
            rid = conn.execute(db.requests.insert().values(
                owner=owner, server=server, requester=actor, status="pending", created_at=at,
            )).inserted_primary_key[0]
            self.audit(conn, inst.key, actor, action, member=actor, detail={"request": rid, "owner_connected": True}, at=at)
        self.room(owner, server).bump()
        return {**self.request(rid), "instance": inst.model()}

    def request(self, rid: int) -> dict:
        with self.engine.connect() as conn:
            row = conn.execute(select(db.requests).where(db.requests.c.id == rid)).mappings().first()
        if row is None:
            raise CollabError(404, "No such access request.")
        return self._request_model(row)

    async def request_status(self, actor: str, rid: int) -> dict:
        req = self.request(rid)
        if actor not in (req["requester"], req["owner"]) and not await self.is_admin(actor):
            raise CollabError(404, "No such access request.")
        return req

    async def decide(self, actor: str, rid: int, decision: Any) -> dict:
        req = self.request(rid)
        inst_key = (req["owner"], req["server"])
        action = "decide-request"
        if actor != req["owner"]:
            raise self.refuse(inst_key, actor, action, CollabError(403, "Only the owner can answer this request."),
                              member=req["requester"], detail={"request": rid})
        roles = {"full": Role.SUPPORT, "read-only": Role.GUEST, "reject": None}
        if decision not in roles:
            raise self.refuse(inst_key, actor, action, CollabError(
                400, "Answer with full, read-only or reject."), member=req["requester"], detail={"request": rid})
        if req["status"] != "pending":
            raise self.refuse(inst_key, actor, action, CollabError(409, f"This request is already {req['status']}."),
                              member=req["requester"], detail={"request": rid})
        role = roles[decision]
        if role is not None:
            inst = await self.instance(*inst_key)
            await self._grant(inst, req["requester"], role, actor=actor, granted_by=actor, source="request",
                              action=action, detail={"request": rid, "decision": decision})
        else:
            with self.engine.begin() as conn:
                self.audit(conn, inst_key, actor, action, member=req["requester"],
                           detail={"request": rid, "decision": decision})
        with self.engine.begin() as conn:
            conn.execute(db.requests.update().where(db.requests.c.id == rid).values(
                status="rejected" if role is None else decision, decided_at=self.now(), decided_by=actor))
        self.room(*inst_key).bump()
        return self.request(rid)

    # -- views over many instances ----------------------------------------------------------
    async def my_instances(self, actor: str) -> list[dict]:
        model = await self.person(actor) or {}
        out = []
        for spawner in (model.get("servers") or {}).values():
            if not spawner.get("name"):
                continue
            inst = self._instance(actor, spawner)
            out.append({**inst.model(), "members": len(self.active_grants(actor, inst.server)),
                        "pending_requests": len(self.requests_for(actor, inst.server, "pending")),
                        "presence": self.presence(actor, inst.server)})
        return sorted(out, key=lambda i: i["display_name"].lower())

    async def shared_with_me(self, actor: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(db.grants).where(
                db.grants.c.member == actor, db.grants.c.revoked_at.is_(None))).mappings().all()
        out = []
        for g in rows:
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
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(db.grants).where(
                db.grants.c.member == actor, db.grants.c.revoked_at.is_(None))).mappings().all()]

    # -- keeping grants true to the hub and the catalogue -----------------------------------
    async def reconcile(self) -> int:
        """Revoke grants whose holder left the proposal (or lost their support role), and
        forget grants whose share or server no longer exists. Returns how many changed."""
        with self.engine.connect() as conn:
            keys = conn.execute(select(db.grants.c.owner, db.grants.c.server).where(
                db.grants.c.revoked_at.is_(None)).distinct()).all()
        changed = 0
        for owner, server in keys:
            try:
                changed += await self._reconcile_instance(owner, server)
            except Exception:  # one broken instance must not stop the others
                log.exception("Reconciling the members of %s/%s failed", owner, server)
        return changed

    async def _reconcile_instance(self, owner: str, server: str) -> int:
        try:
            inst = await self.instance(owner, server)
        except CollabError:
            inst = None
        grants = self.active_grants(owner, server)
        if inst is None:
            with self.engine.begin() as conn:
                for g in grants:
                    conn.execute(db.grants.update().where(db.grants.c.id == g["id"]).values(
                        revoked_at=self.now(), revoked_by="visa-collab", revoke_reason="instance deleted"))
            return len(grants)
        shares = {s["user"]["name"]: s for s in await self.hub.shares(owner, server) if s.get("user")}
        changed = 0
        for g in grants:
            member, role = g["member"], Role(g["role"])
            share = shares.get(member)
            if share is None or role_of_share(share.get("scopes", [])) is None:
                with self.engine.begin() as conn:
                    conn.execute(db.grants.update().where(db.grants.c.id == g["id"]).values(
                        revoked_at=self.now(), revoked_by="hub", revoke_reason="share removed in the hub"))
                    self.audit(conn, inst.key, "visa-collab", "revoke", member=member, role=role.value,
                               granted_by=g["granted_by"], detail={"reason": "share removed in the hub"})
                changed += 1
                continue
            model = await self.person(member)
            groups = (model or {}).get("groups", [])
            if g["source"] in ("request", "policy"):
                still = model is not None and may_request_support(groups, inst.proposal)
                reason = "no longer facility support staff for this proposal"
            elif role is Role.SUPPORT:
                still = model is not None and refusal(role, member, groups, inst.proposal) is None
                reason = "no longer facility support staff for this proposal"
            else:
                still = model is not None and on_team(groups, inst.proposal)
                reason = f"left the team of proposal {inst.proposal}"
            if not still:
                await self._revoke(inst.key, member, actor="visa-collab", reason=reason)
                changed += 1
        return changed


def _rank(role: Role) -> int:
    return {Role.GUEST: 1, Role.USER: 2, Role.SUPPORT: 3}.get(role, 0)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt


__all__ = ["Collaboration", "CollabError", "Instance", "Room", "hash_code"]
