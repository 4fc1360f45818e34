"""What the collaboration service does, independent of HTTP: members, invitations, access
requests, owner-away policy, presence and the audit log of each instance.

Grants are JupyterHub shares made through the hub's REST API (`HubAPI`); this module decides
*whether* to make them and records who asked, why, and what happened — refusals included.
Every public method takes the acting person's name first and checks their right to act.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from . import db
from .events import EventBus
from .hubapi import HubAPI, HubError
from .roles import GRANTABLE, OWNER_AWAY_POLICIES, Role, RoleError, course_trainers, parse_role, refusal, share_scopes

log = logging.getLogger("visa_collab")

from .collab_invitations import InvitationsMixin  # noqa: E402 (after the shared names above)
from .collab_listings import ListingsMixin  # noqa: E402
from .collab_reconcile import ReconcileMixin  # noqa: E402
from .collab_rooms import RoomsMixin  # noqa: E402
from .collab_types import CollabError, Instance, Room, hash_code  # noqa: E402 (re-exported)


class Collaboration(InvitationsMixin, RoomsMixin, ListingsMixin, ReconcileMixin):
    def __init__(
        self, engine: Engine, hub: HubAPI, *, service_prefix: str = "/services/visa-collab/",
        presence_ttl: float = 45.0, request_ttl: float = 300.0, owner_page_ttl: float = 90.0,
        monotonic: Callable[[], float] = time.monotonic, now: Callable[[], datetime] = db.now,
    ) -> None:
        self.hub = hub
        # every query runs in the database's worker threads, never on the event loop
        self.database = db.Database(engine)
        self.service_prefix = service_prefix
        self.presence_ttl, self.request_ttl = presence_ttl, request_ttl
        # how long after the owner's pages last polled this service the owner still counts as present
        self.owner_page_ttl = owner_page_ttl
        self.monotonic, self.now = monotonic, now
        self.rooms: dict[tuple[str, str], Room] = {}
        # the proposal each instance was last seen *running* with (see _instance)
        self.confirmed_proposals: dict[tuple[str, str], str | None] = {}
        # and, for a course instance, the trainers its spawner recorded (roles.refusal)
        self.confirmed_trainers: dict[tuple[str, str], tuple[str, ...]] = {}
        # distinguishes this process's room versions from a previous one's
        self.epoch = secrets.token_hex(4)
        self.events = EventBus()  # access requests made, answered, expired: pushed to open pages

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

    def _instance(self, owner: str, spawner: dict) -> Instance:
        """An instance as the hub describes it, with the proposal it really runs for.

        A server's ``user_options`` are only true while it runs: VisaSpawner.start checked
        them against the owner's proposals. A stopped record's options may be what a refused
        start asked for, or what the owner set with ``PATCH`` (the hub accepts any options on a
        stopped server): trusting them would lend another proposal's team (or support staff)
        to this instance. So the proposal is the one last seen while running (kept in memory;
        unknown after the service restarts until the instance runs again, and then nothing is
        granted on it and nothing revoked for team reasons).
        """
        key = (owner, spawner["name"])
        ready = bool(spawner.get("ready"))
        if ready:
            options = spawner.get("user_options") or {}
            self.confirmed_proposals[key] = options.get("proposal")
            self.confirmed_trainers[key] = course_trainers(spawner["name"], options)
        return Instance(
            owner=owner, server=spawner["name"],
            display_name=spawner.get("display_name") or spawner["name"],
            proposal=self.confirmed_proposals.get(key), ready=ready, url=spawner.get("url") or "",
            course_trainers=self.confirmed_trainers.get(key, ()),
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

    async def refuse(self, inst_key: tuple[str, str], actor: str, action: str, error: CollabError,
                     **kw: Any) -> CollabError:
        """Record a refusal in the instance's audit log and return the error to raise."""
        detail = {"reason": error.message, **kw.pop("detail", {})}
        await self.database.run(self.audit, inst_key, actor, action, outcome="refused", detail=detail, **kw)
        return error

    async def audit_log(self, actor: str, owner: str, server: str, limit: int = 500) -> list[dict]:
        if actor != owner and not await self.is_admin(actor):
            raise CollabError(403, "Only the owner of this instance and administrators can read its audit log.")
        rows = await self.database.all(
            select(db.audit).where(db.audit.c.owner == owner, db.audit.c.server == server)
            .order_by(db.audit.c.at.desc(), db.audit.c.id.desc()).limit(limit)
        )
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

    async def active_grant(self, owner: str, server: str, member: str):
        """The member's current grant on the instance, or None."""
        return await self.database.run(self._active_grant, owner, server, member)

    async def active_grants(self, owner: str, server: str) -> list[dict]:
        rows = await self.database.all(select(db.grants).where(
            db.grants.c.owner == owner, db.grants.c.server == server, db.grants.c.revoked_at.is_(None),
        ).order_by(db.grants.c.member))
        return [dict(r) for r in rows]

    async def _hub_grant(self, inst: Instance, member: str, role: Role, previous: Role | None) -> None:
        await self.hub.grant(inst.owner, inst.server, member, share_scopes(role, inst.owner, inst.server))
        if previous and previous is not role:
            old = share_scopes(previous, inst.owner, inst.server)[1:]  # keep access, drop the old role
            await self.hub.revoke(inst.owner, inst.server, member, old)

    async def _grant(self, inst: Instance, member: str, role: Role, *, actor: str, granted_by: str,
                     source: str, action: str, detail: dict | None = None) -> dict:
        current = await self.active_grant(inst.owner, inst.server, member)
        previous = Role(current["role"]) if current else None
        try:
            await self._hub_grant(inst, member, role, previous)
        except HubError as e:
            log.error("Granting %s on %s/%s to %s failed: %s", role.value, inst.owner, inst.server, member, e)
            raise await self.refuse(inst.key, actor, action,
                                    CollabError(502, "The hub refused the grant; nothing was changed."),
                                    member=member, role=role.value, detail={"hub_status": e.status}) from None
        at = self.now()

        def record(conn) -> None:
            if current:
                conn.execute(db.grants.update().where(db.grants.c.id == current["id"]).values(
                    revoked_at=at, revoked_by=actor, revoke_reason=f"role changed to {role.value}"))
            conn.execute(db.grants.insert().values(
                owner=inst.owner, server=inst.server, member=member, role=role.value, granted_by=granted_by,
                source=source, created_at=at))
            self.audit(conn, inst.key, actor, action, member=member, role=role.value, granted_by=granted_by,
                       detail={**({"previous_role": previous.value} if previous else {}), **(detail or {})}, at=at)

        await self.database.run(record)
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

        def record(conn) -> None:
            current = self._active_grant(conn, owner, server, member)
            if current:
                conn.execute(db.grants.update().where(db.grants.c.id == current["id"]).values(
                    revoked_at=at, revoked_by=actor, revoke_reason=reason))
            self.audit(conn, inst_key, actor, action, member=member,
                       role=current["role"] if current else None,
                       granted_by=current["granted_by"] if current else None, detail={"reason": reason}, at=at)

        await self.database.run(record)
        self.room(owner, server).bump()

    async def _check_member(self, actor: str, inst: Instance, member: Any, role: Role, action: str) -> dict:
        """The member's hub model, or a recorded refusal."""
        if not isinstance(member, str) or not member.strip():
            raise await self.refuse(inst.key, actor, action, CollabError(400, "Say who to share with."))
        member = member.strip()
        if member == inst.owner:
            raise await self.refuse(inst.key, actor, action,
                                    CollabError(400, "You cannot share an instance with yourself."),
                                    member=member, role=role.value)
        model = await self.person(member)
        if model is None:
            raise await self.refuse(inst.key, actor, action, CollabError(
                404, f"Nobody called {member[:60]!r} has used VISA: they must log in once before you can add them."),
                member=member[:255], role=role.value)
        why = refusal(role, member, model.get("groups", []), inst.proposal, inst.server, inst.course_trainers)
        if why and inst.proposal is None and not inst.ready and inst.key not in self.confirmed_proposals:
            why = "Start this instance first: its proposal is known once it runs."
        if why:
            raise await self.refuse(inst.key, actor, action, CollabError(403, why), member=member, role=role.value)
        return model

    async def _role(self, inst: Instance, actor: str, value: Any, action: str, member: str | None = None) -> Role:
        try:
            return parse_role(value)
        except RoleError as e:
            raise await self.refuse(inst.key, actor, action, CollabError(400, str(e)),
                                    member=member, detail={"role": str(value)[:40]}) from None

    async def members(self, actor: str, owner: str, server: str) -> dict:
        inst = await self.instance(owner, server)
        await self._require_owner(actor, inst, allow_admin=True)
        grants = await self.active_grants(owner, server)
        return {
            "instance": inst.model(),
            "members": [{"member": g["member"], "role": g["role"], "granted_by": g["granted_by"],
                         "source": g["source"], "created_at": db.iso(g["created_at"])} for g in grants],
            "policy": await self.policy(owner, server),
            "presence": self.presence(owner, server),
            "invitations": await self.invitations(owner, server),
            "requests": await self.requests_for(owner, server, status="pending"),
            "roles": [{"value": r.value, "label": r.label} for r in GRANTABLE],
            "owner_away_policies": OWNER_AWAY_POLICIES,
        }

    async def add_member(self, actor: str, owner: str, server: str, member: Any, role: Any) -> dict:
        inst = await self.instance(owner, server)
        action = "grant"
        if actor != owner:
            raise await self.refuse(inst.key, actor, action,
                                    CollabError(403, "Only the owner of this instance can share it."),
                                    member=str(member)[:255] if member else None)
        r = await self._role(inst, actor, role, action, member=str(member)[:255] if member else None)
        model = await self._check_member(actor, inst, member, r, action)
        current = await self.active_grant(owner, server, model["name"])
        if current:
            raise await self.refuse(inst.key, actor, action, CollabError(
                409, f"{model['name']} is already a member ({current['role']}): change their role instead."),
                member=model["name"], role=r.value)
        return await self._grant(inst, model["name"], r, actor=actor, granted_by=actor, source="direct", action=action)

    async def change_role(self, actor: str, owner: str, server: str, member: str, role: Any) -> dict:
        inst = await self.instance(owner, server)
        action = "change-role"
        if actor != owner:
            raise await self.refuse(inst.key, actor, action,
                                    CollabError(403, "Only the owner of this instance can change roles."),
                                    member=member)
        r = await self._role(inst, actor, role, action, member=member)
        current = await self.active_grant(owner, server, member)
        if not current:
            raise await self.refuse(inst.key, actor, action,
                                    CollabError(404, f"{member[:60]} is not a member of this instance."),
                                    member=member[:255])
        if current["role"] == r.value:
            return {"member": member, "role": r.value, "granted_by": current["granted_by"], "unchanged": True}
        await self._check_member(actor, inst, member, r, action)
        return await self._grant(inst, member, r, actor=actor, granted_by=actor, source="direct", action=action)

    async def course_grant(self, service: str, owner: str, server: str, member: Any, role: Any) -> dict:
        """The training service (`roles.TRAINING_SERVICE`) makes one of a course's trainers GUEST
        (the class start: the grid watches) or SUPPORT (Help) on that course's instance, as its
        owner would; nobody else, no other role, no other instance. It needs no token of the owner."""
        inst = await self.instance(owner, server)
        action = "grant"
        r = await self._role(inst, service, role, action, member=str(member)[:255] if member else None)
        if r not in (Role.GUEST, Role.SUPPORT) or not isinstance(member, str) or member not in inst.course_trainers:
            raise await self.refuse(inst.key, service, action, CollabError(
                403, "The training service may only let the course's trainers watch or help its instances."),
                member=str(member)[:255] if member else None, role=r.value)
        current = await self.active_grant(owner, server, member)
        if current and current["role"] == r.value:
            return {"member": member, "role": r.value, "granted_by": current["granted_by"], "unchanged": True}
        await self._check_member(service, inst, member, r, action)
        return await self._grant(inst, member, r, actor=service, granted_by=owner, source="direct",
                                 action="change-role" if current else action)

    async def remove_member(self, actor: str, owner: str, server: str, member: str) -> dict:
        """Revoke a member's grant. Someone who could run code (USER, SUPPORT) may have left
        processes running as the instance's account: the answer offers a restart."""
        inst = await self.instance(owner, server)
        action = "revoke"
        if actor != owner:
            raise await self.refuse(inst.key, actor, action,
                                    CollabError(403, "Only the owner of this instance can remove members."),
                                    member=member)
        current = await self.active_grant(owner, server, member)
        if not current:
            raise await self.refuse(inst.key, actor, action,
                                    CollabError(404, f"{member[:60]} is not a member of this instance."),
                                    member=member[:255])
        await self._revoke(inst.key, member, actor=actor, reason="removed by the owner")
        ran_code = await self._could_run_code(inst.key, member)
        return {"member": member, "role": current["role"], "restart_suggested": ran_code and inst.ready,
                "message": (f"{member} no longer has access. Programs {member} started in the instance "
                            "(a kernel, a terminal, anything on the desktop) keep running until it restarts: "
                            "restart it now?") if ran_code and inst.ready else f"{member} no longer has access."}

    async def _could_run_code(self, inst_key: tuple[str, str], member: str) -> bool:
        """Did `member` ever hold USER or SUPPORT here (per the audit log: demoted first counts too)?"""
        code_roles = (Role.USER.value, Role.SUPPORT.value)
        row = await self.database.first(select(db.audit.c.id).where(
            db.audit.c.owner == inst_key[0], db.audit.c.server == inst_key[1], db.audit.c.member == member,
            db.audit.c.role.in_(code_roles), db.audit.c.outcome == "ok").limit(1))
        return row is not None

    async def restart(self, actor: str, owner: str, server: str, timeout: float = 120.0) -> dict:
        """Stop the instance and start it again with its own settings (owner only): every process
        in it ends, whoever started it. Everyone connected is disconnected."""
        inst = await self.instance(owner, server)
        if actor != owner:
            raise await self.refuse(inst.key, actor, "restart",
                                    CollabError(403, "Only the owner of this instance can restart it."))
        model = await self.person(owner) or {}
        options = dict((model.get("servers", {}).get(server) or {}).get("user_options") or {})
        if not inst.ready:
            raise CollabError(409, "This instance is not running.")
        await self.hub.stop_server(owner, server)
        deadline = self.monotonic() + timeout
        while True:
            spawner = ((await self.person(owner)) or {}).get("servers", {}).get(server) or {}
            if not spawner.get("ready") and not spawner.get("pending"):
                break
            if self.monotonic() > deadline:
                raise CollabError(504, "The instance did not stop in time; try again.")
            await asyncio.sleep(0.5)
        await self.hub.start_server(owner, server, options)
        await self.database.run(self.audit, inst.key, actor, "restart")
        return {"restarting": True, "url": inst.url}


__all__ = ["Collaboration", "CollabError", "Instance", "Room", "hash_code"]
