"""Invitation links: one-use or limited, expiring, hashed codes for a role.

Part of `Collaboration` (collab.py), split by responsibility; it uses that class's helpers.
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from . import db
from .collab_types import CODE_PREFIX, CollabError, _rank, hash_code
from .roles import Role

log = logging.getLogger("visa_collab")



class InvitationsMixin:
    """Mixed into `Collaboration`."""


    # -- invitations ------------------------------------------------------------------------
    async def invitations(self, owner: str, server: str) -> list[dict]:
        rows = await self.database.all(select(db.invitations).where(
            db.invitations.c.owner == owner, db.invitations.c.server == server,
            db.invitations.c.revoked_at.is_(None), db.invitations.c.expires_at > self.now(),
            db.invitations.c.uses < db.invitations.c.max_uses,
        ).order_by(db.invitations.c.id))
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
            raise await self.refuse(inst.key, actor, action,
                                    CollabError(403, "Only the owner of this instance can invite."))
        r = await self._role(inst, actor, role, action)
        if r is Role.SUPPORT:
            raise await self.refuse(inst.key, actor, action, CollabError(
                400, "Support access is given on request or by name, not by invitation link."), role=r.value)
        try:
            expires_in, max_uses = int(expires_in), int(max_uses)
        except (TypeError, ValueError):
            raise await self.refuse(inst.key, actor, action,
                                    CollabError(400, "expires_in and max_uses must be whole numbers."),
                                    role=r.value) from None
        if not 60 <= expires_in <= 30 * 86400:
            raise await self.refuse(inst.key, actor, action, CollabError(
                400, "An invitation must expire in between one minute and 30 days."), role=r.value)
        if not 1 <= max_uses <= 100:
            raise await self.refuse(inst.key, actor, action,
                                    CollabError(400, "An invitation is good for 1 to 100 people."),
                                    role=r.value)
        code = CODE_PREFIX + secrets.token_urlsafe(24)
        at = self.now()

        def record(conn) -> int:
            row_id = conn.execute(db.invitations.insert().values(
                owner=owner, server=server, role=r.value, code_hash=hash_code(code), created_by=actor,
                created_at=at, expires_at=at + timedelta(seconds=expires_in), max_uses=max_uses, uses=0,
            )).inserted_primary_key[0]
            self.audit(conn, inst.key, actor, action, role=r.value,
                       detail={"invitation": row_id, "expires_in": expires_in, "max_uses": max_uses}, at=at)
            return row_id

        row_id = await self.database.run(record)
        return {"id": row_id, "role": r.value, "code": code, "url": f"{self.service_prefix}invite?code={code}",
                "expires_at": db.iso(at + timedelta(seconds=expires_in)), "max_uses": max_uses}

    async def revoke_invitation(self, actor: str, owner: str, server: str, invitation_id: int) -> None:
        inst = await self.instance(owner, server)
        if actor != owner:
            raise await self.refuse(inst.key, actor, "revoke-invitation",
                                    CollabError(403, "Only the owner can revoke invitations."))
        def withdraw(conn) -> None:
            n = conn.execute(db.invitations.update().where(
                db.invitations.c.id == invitation_id, db.invitations.c.owner == owner,
                db.invitations.c.server == server, db.invitations.c.revoked_at.is_(None),
            ).values(revoked_at=self.now())).rowcount
            if not n:
                raise CollabError(404, "No such invitation.")
            self.audit(conn, inst.key, actor, "revoke-invitation", detail={"invitation": invitation_id})

        await self.database.run(withdraw)

    async def _find_invitation(self, code: Any):
        if not isinstance(code, str) or not code.startswith(CODE_PREFIX) or len(code) > 100:
            return None
        return await self.database.first(select(db.invitations).where(db.invitations.c.code_hash == hash_code(code)))

    async def describe_invitation(self, actor: str, code: Any) -> dict:
        """What accepting would give (for the confirmation page); refusals are not consumed."""
        inv = await self._find_invitation(code)
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
        inv = await self._find_invitation(code)
        if inv is None:
            log.info("Invalid invitation code presented by %s", actor)
            raise CollabError(404, "This invitation link is not valid. Ask the instance owner for a new one.")
        inst_key = (inv["owner"], inv["server"])
        action = "accept-invitation"
        detail = {"invitation": inv["id"]}
        problem = self._invitation_problem(inv)
        if problem:
            raise await self.refuse(inst_key, actor, action, CollabError(410, problem), member=actor, role=inv["role"],
                                    detail=detail)
        try:
            inst = await self.instance(*inst_key)
        except CollabError as e:
            raise await self.refuse(inst_key, actor, action, e, member=actor, detail=detail) from None
        role = Role(inv["role"])
        await self._check_member(actor, inst, actor, role, action)
        current = await self.active_grant(inst.owner, inst.server, actor)
        if current and _rank(Role(current["role"])) >= _rank(role):
            # already at least as much: do not spend a use of the link
            return {"instance": inst.model(), "role": current["role"], "unchanged": True}
        def spend(conn) -> int:  # one use first, atomically: no over-use under races
            return conn.execute(db.invitations.update().where(
                db.invitations.c.id == inv["id"], db.invitations.c.uses < db.invitations.c.max_uses,
                db.invitations.c.revoked_at.is_(None), db.invitations.c.expires_at > self.now(),
            ).values(uses=db.invitations.c.uses + 1)).rowcount

        spent = await self.database.run(spend)
        if not spent:
            raise await self.refuse(inst_key, actor, action, CollabError(
                410, "This invitation has already been used. Ask the instance owner for a new one."),
                member=actor, role=role.value, detail=detail)
        grant = await self._grant(inst, actor, role, actor=actor, granted_by=inv["created_by"],
                                  source="invitation", action=action, detail=detail)
        return {"instance": inst.model(), **grant}
