"""The console's Users page: people, their facility roles and proposals, their instance quota and its override.

Roles and proposals are the groups the VISA authenticator keeps in step with the catalogue; they
are read from the hub's database in one query (read-only, in an executor, like the inventory).
The quota is in each person's auth state (``auth_state["visa"]["quota"]``), which only the hub
can decrypt: it is asked for the people on the page shown (50 at most), a few at a time.
An admin may override a person's quota (a form posted here, audited as action "quota"): it goes
to the hub's quota overrides file (`visa_spawner.quota_overrides`), which the hub reads at its
next request, no restart. Roles and guest expiry are shown only: the catalogue is their source.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from jupyterhub import orm
from sqlalchemy import select
from tornado import web

from visa_collab.hubapi import HubError
from visa_spawner.quota_overrides import check_quota_value, read_overrides, write_override

from .console_base import ConsolePage
from .console_views import PAGE_SIZE
from .inventory import read_only_engine

log = logging.getLogger("visa_ops.console")
HUB_CALLS_AT_ONCE = 8


@dataclass
class Person:
    name: str
    admin: bool
    last_activity: datetime | None
    roles: list[str]
    proposals: list[str]
    quota: str = "—"  # the catalogue's
    override: int | None = None
    guest_until: str = ""  # guests only: the last day of their GUEST role, as the auth state says


def load_people_sync(hub_db_url: str) -> list[Person]:
    """Every hub user with their ``role:*`` and ``proposal:*`` groups (two queries)."""
    u, g, m = orm.User, orm.Group, orm.user_group_map
    with read_only_engine(hub_db_url).connect() as conn:
        people = {r.name: Person(r.name, bool(r.admin), r.last_activity, [], [])
                  for r in conn.execute(select(u.name, u.admin, u.last_activity))}
        for name, group in conn.execute(select(u.name, g.name).join(m, m.c.user_id == u.id)
                                        .join(g, g.id == m.c.group_id)):
            kind, _, value = group.partition(":")
            if name in people and kind == "role":
                people[name].roles.append(value.upper())
            elif name in people and kind == "proposal":
                people[name].proposals.append(value)
    return sorted(people.values(), key=lambda p: p.name)


def user_exists_sync(hub_db_url: str, name: str) -> bool:
    with read_only_engine(hub_db_url).connect() as conn:
        return conn.execute(select(orm.User.id).where(orm.User.name == name)).first() is not None


def quota_text(quota: int) -> str:
    return {-1: "unlimited", 0: "0 (awaiting approval)"}.get(quota, str(quota))


class UsersPage(ConsolePage):
    section, title = "users", "Users"

    async def get(self) -> None:
        name = self.get_argument("name", "").strip()[:200]
        role = self.get_argument("role", "").strip().upper()[:40]
        page_text = self.get_argument("page", "1")
        if not page_text.isdigit() or not 1 <= int(page_text) <= 100_000:
            raise web.HTTPError(400, "page must be a whole number from 1.")
        page = int(page_text)
        loop = asyncio.get_running_loop()
        everyone = await loop.run_in_executor(None, load_people_sync, self.ops.hub_db_url)
        roles = sorted({r for p in everyone for r in p.roles})
        matching = [p for p in everyone if name.lower() in p.name.lower() and (not role or role in p.roles)]
        shown = matching[(page - 1) * PAGE_SIZE:page * PAGE_SIZE]
        await self.add_quotas(shown)
        if self.overrides_file:
            overrides = await loop.run_in_executor(None, read_overrides, self.overrides_file)
            for person in shown:
                person.override = overrides.get(person.name)
        self.page("admin_users.html", people=shown, total=len(matching), page_number=page,
                  pages=max(1, -(-len(matching) // PAGE_SIZE)), name=name, role=role, roles=roles,
                  overrides_file=self.overrides_file)

    @property
    def overrides_file(self) -> str:
        return self.settings.get("quota_overrides_file") or os.environ.get("VISA_OPS_QUOTA_OVERRIDES_FILE", "")

    async def post(self) -> None:
        """Set (``quota`` -1..1000) or clear (``quota`` empty) one person's (``user``) quota override."""
        if not self.overrides_file:
            raise web.HTTPError(409, "VISA_OPS_QUOTA_OVERRIDES_FILE is not set: quotas cannot be overridden here.")
        user, text = self.get_body_argument("user", "").strip(), self.get_body_argument("quota", "").strip()
        try:
            quota = check_quota_value(text) if text else None
        except ValueError as e:
            raise web.HTTPError(400, "%s", str(e)) from None
        loop = asyncio.get_running_loop()
        if not user or len(user) > 255 or not await loop.run_in_executor(
                None, user_exists_sync, self.ops.hub_db_url, user):
            raise web.HTTPError(400, "No such user.")
        await loop.run_in_executor(None, write_override, self.overrides_file, user, quota)
        await self.ops.store.add_audit(self.admin, "quota", owner=user, reason="clear" if quota is None else "set",
                                       detail={"user": user, "quota": quota})
        log.info("%s %s the quota override of %s%s", self.admin, "cleared" if quota is None else "set", user,
                 "" if quota is None else f" to {quota}")
        self.redirect(f"{self.admin_prefix}users?{urlencode({'name': user})}", status=303)

    async def add_quotas(self, people: list[Person]) -> None:
        """The quota from each person's auth state (the hub decrypts it), a few calls at a time."""
        gate = asyncio.Semaphore(HUB_CALLS_AT_ONCE)

        async def one(person: Person) -> None:
            async with gate:
                try:
                    model = await self.ops.hub.user(person.name) or {}
                except HubError:
                    person.quota = "unknown"
                    return
            visa = (model.get("auth_state") or {}).get("visa") or {}
            if "quota" in visa:
                person.quota = quota_text(visa["quota"])
            if "GUEST" in visa.get("roles", ()):
                person.guest_until = str((visa.get("role_expires") or {}).get("GUEST") or "see the catalogue")

        await asyncio.gather(*(one(p) for p in people))
