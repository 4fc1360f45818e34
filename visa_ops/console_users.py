"""The console's Users page: people, their facility roles and proposals, and their instance quota.

Roles and proposals are the groups the VISA authenticator keeps in step with the catalogue; they
are read from the hub's database in one query (read-only, in an executor, like the inventory).
The quota is in each person's auth state (``auth_state["visa"]["quota"]``), which only the hub
can decrypt: it is asked for the people on the page shown (50 at most), a few at a time.
Overrides are not offered: the catalogue is the source of roles, quotas and role expiry.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from jupyterhub import orm
from sqlalchemy import select
from tornado import web

from visa_collab.hubapi import HubError

from .console_base import ConsolePage
from .console_views import PAGE_SIZE
from .inventory import read_only_engine

HUB_CALLS_AT_ONCE = 8


@dataclass
class Person:
    name: str
    admin: bool
    last_activity: datetime | None
    roles: list[str]
    proposals: list[str]
    quota: str = "—"


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
        self.page("admin_users.html", people=shown, total=len(matching), page_number=page,
                  pages=max(1, -(-len(matching) // PAGE_SIZE)), name=name, role=role, roles=roles)

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
                quota = visa["quota"]
                person.quota = {-1: "unlimited", 0: "0 (awaiting approval)"}.get(quota, str(quota))

        await asyncio.gather(*(one(p) for p in people))
