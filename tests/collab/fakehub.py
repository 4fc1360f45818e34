"""An in-memory stand-in for the hub's REST API, with the hub's share semantics."""
from __future__ import annotations

from visa_collab.hubapi import HubError


class FakeHub:
    def __init__(self) -> None:
        self.people: dict[str, dict] = {}
        self.share_table: dict[tuple[str, str, str], set[str]] = {}
        self.calls: list[tuple] = []  # writes
        self.reads: list[tuple] = []  # listings (what one reconciliation pass reads)

    def add_person(self, name: str, groups=(), admin: bool = False) -> None:
        self.people[name] = {"kind": "user", "name": name, "groups": list(groups), "admin": admin, "servers": {}}

    def add_server(self, owner: str, server: str, proposal: str | None, ready: bool = True) -> None:
        self.people[owner]["servers"][server] = {
            "name": server, "display_name": server.title(), "ready": ready,
            "user_options": {"proposal": proposal} if proposal else {}, "url": f"/user/{owner}/{server}/",
        }

    async def user(self, name: str):
        return self.people.get(name)

    async def group(self, name: str):
        users = [p for p, m in self.people.items() if name in m["groups"]]
        return {"name": name, "users": users} if users else None

    async def users(self):
        self.reads.append(("users",))
        return list(self.people.values())

    async def shares(self, owner: str, server: str):
        return [{"user": {"name": m}, "scopes": sorted(s)} for (o, sv, m), s in self.share_table.items()
                if (o, sv) == (owner, server)]

    def share_items(self, owner: str | None = None, member: str | None = None) -> list[dict]:
        """Shares as the hub lists them (`/shares/<owner>`, `/users/<member>/shared`)."""
        return [{"server": {"user": {"name": o}, "name": sv, "ready": self.people[o]["servers"][sv]["ready"]},
                 "user": {"name": m}, "group": None, "kind": "user", "scopes": sorted(s)}
                for (o, sv, m), s in self.share_table.items()
                if owner in (None, o) and member in (None, m) and sv in self.people.get(o, {}).get("servers", {})]

    async def shared_with(self, member: str):
        self.reads.append(("shared", member))
        return self.share_items(member=member)

    async def owner_shares(self, owner: str):
        self.reads.append(("shares", owner))
        return self.share_items(owner=owner)

    async def grant(self, owner: str, server: str, member: str, scopes: list[str]):
        self.calls.append(("grant", owner, server, member, tuple(scopes)))
        if server not in self.people.get(owner, {}).get("servers", {}):
            raise HubError(404, "No such server")
        if member not in self.people:
            raise HubError(400, f"No such user: {member}")
        self.share_table.setdefault((owner, server, member), set()).update(scopes)
        return {}

    async def revoke(self, owner: str, server: str, member: str, scopes=None):
        self.calls.append(("revoke", owner, server, member, tuple(scopes) if scopes else None))
        key = (owner, server, member)
        if key not in self.share_table:
            return {}
        if scopes is None:
            del self.share_table[key]
        else:
            self.share_table[key] -= set(scopes)
            if not self.share_table[key]:
                del self.share_table[key]
        return {}

    def scopes_of(self, owner: str, server: str, member: str) -> set[str]:
        return self.share_table.get((owner, server, member), set())
