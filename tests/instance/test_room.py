"""The instance's room: levels over time, owner-away policies, enforcement on open connections
(``-m fast``: fake handlers and clock, no server)."""
from __future__ import annotations

import asyncio

import pytest

from tests.support import ManualClock
from visa_instance.authorizer import role_of, share_roles_from
from visa_instance.room import CLOSE_NOT_ALLOWED, Room

F = "!server=alice/run"



class FakeWs:
    def is_closing(self) -> bool:
        return False


class FakeHandler:
    """What the room needs from a tornado websocket handler."""

    def __init__(self, websocket: bool = True) -> None:
        self.ws_connection = FakeWs() if websocket else None
        self.closed_with: tuple | None = None

        class Request:
            headers = {"Upgrade": "websocket"} if websocket else {}

        self.request = Request()

    def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)
        self.ws_connection = None


class FakeShares:
    def __init__(self, shares: list[dict]) -> None:
        self.items = shares
        self.fetches = 0

    async def own_token_id(self) -> str:
        return "a7"  # the server's own token, as the hub's whoami reports it

    async def fetch(self) -> list[dict]:
        self.fetches += 1
        return self.items


def person(name: str, *scopes: str, groups=()) -> dict:
    """Someone signed in at the hub, in their browser (an OAuth token of a login session)."""
    return {"kind": "user", "name": name, "scopes": [f"access:servers{F}", *scopes], "groups": list(groups),
            "token_id": f"o{len(name)}", "session_id": f"session-of-{name}"}


def api_token(name: str, token_id: str) -> dict:
    """The hub's whoami for an API token (no login session): the server's own, or a script's."""
    return {**person(name), "token_id": token_id, "session_id": None}


ALICE, BOB, DAVE, ERIN = person("alice"), person("bob"), person("dave"), person("erin")
SHARES = [
    {"user": {"name": "bob"}, "scopes": [f"access:servers{F}", f"custom:visa-user{F}"]},
    {"user": {"name": "dave"}, "scopes": [f"access:servers{F}", f"custom:visa-guest{F}"]},
    {"user": {"name": "erin"}, "scopes": [f"access:servers{F}", f"custom:visa-support{F}"]},
    {"group": {"name": "course"}, "scopes": [f"access:servers{F}", f"custom:visa-guest{F}"]},
    {"user": {"name": "mallory"}, "scopes": [f"access:servers{F}"]},  # a bare share gives no role
]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(100.0)


@pytest.fixture
async def room(clock: ManualClock) -> Room:
    r = Room("alice", "run", shares=FakeShares(SHARES), clock=clock, presence_timeout=60, owner_away_grace=10)
    await r.refresh_shares("test")
    return r


def test_share_roles_from_the_hub_listing() -> None:
    assert share_roles_from(SHARES, "alice", "run") == {
        "user:bob": "user", "user:dave": "guest", "user:erin": "support", "group:course": "guest"}
    roles = share_roles_from(SHARES, "alice", "run")
    assert role_of(person("frank", groups=["course"]), "alice", "run", roles) == "guest"
    assert role_of(person("mallory"), "alice", "run", roles) is None
    assert role_of(person("bob", groups=["course"]), "alice", "run", roles) == "user"  # strongest wins


def open_desktop(room: Room, model: dict):
    handler = FakeHandler()
    conn = room.desktop_session(handler, model)
    if conn is not None:
        room.desktop_opened(conn)
    return handler, conn


async def test_levels_follow_the_owner(room: Room, clock: ManualClock) -> None:
    assert room.level_for_model(BOB) == "view"  # the owner has not come yet: locked
    owner, _ = open_desktop(room, ALICE)
    assert room.level_for_model(BOB) == "full"
    bob_handler, bob = open_desktop(room, BOB)
    dave_handler, dave = open_desktop(room, DAVE)
    assert not bob.view_only and dave.view_only
    owner.ws_connection = None  # alice closes her tab
    room.desktop_closed(next(c for c in room.connections if c.name == "alice"))
    clock.t += 5
    room.tick()
    assert not bob.view_only, "a page reload must not lock the room"
    clock.t += 6
    room.tick()
    assert bob.view_only and room.level_for_model(BOB) == "view"
    assert bob_handler.closed_with is None  # locked, not thrown out
    room.owner_away = "disconnect"
    room.tick()
    assert bob_handler.closed_with[0] == CLOSE_NOT_ALLOWED and dave_handler.closed_with[0] == CLOSE_NOT_ALLOWED
    assert room.level_for_model(ERIN) == "full"  # support staff keep working
    assert room.desktop_session(FakeHandler(), BOB) is None
    events = [(e["event"], e["user"]) for e in room.events]
    assert ("owner-away", "alice") in events and ("disconnect", "bob") in events


async def test_lab_websockets_are_closed_when_access_ends(room: Room, clock: ManualClock) -> None:
    owner = open_desktop(room, ALICE)  # noqa: F841 (the room holds only a weak reference)
    lab = FakeHandler()
    room.observe(lab, BOB, "api/kernels/1/channels", "full")
    assert any(c.channel == "lab" and c.name == "bob" for c in room.connections)
    room.share_roles.pop("user:bob")  # the owner removed bob
    room.tick()
    assert lab.closed_with[0] == CLOSE_NOT_ALLOWED
    assert room.level_for_model(BOB) == "none"


async def test_recent_lab_requests_count_as_presence(room: Room, clock: ManualClock) -> None:
    room.observe(FakeHandler(websocket=False), ALICE, "api/contents/", "full")
    assert room.owner_present()
    clock.t += 61
    room.tick()
    assert room.owner_present()  # grace after her last request ended
    clock.t += 11
    assert not room.owner_present()
    room.observe(FakeHandler(websocket=False), ALICE, "visa/api/room", "full")
    assert not room.owner_present(), "the desktop page's polling is not Lab use"


async def test_unknown_member_triggers_one_share_refresh(room: Room, clock: ManualClock) -> None:
    shares = room.shares
    before = shares.fetches
    newcomer = person("frank")
    clock.t += 3
    await room.know(newcomer)
    await room.know(newcomer)  # within 2 s: not again
    assert shares.fetches == before + 1
    shares.items = SHARES + [{"user": {"name": "frank"}, "scopes": [f"access:servers{F}", f"custom:visa-guest{F}"]}]
    clock.t += 3
    await room.know(newcomer)
    assert room.role(newcomer) == "guest"


async def test_dropped_input_is_counted_and_reported(room: Room) -> None:
    owner = open_desktop(room, ALICE)  # noqa: F841
    _h, dave = open_desktop(room, DAVE)
    fed = dave.stream.feed(b"RFB 003.008\n\x01\x01" + bytes([4, 1, 0, 0, 0, 0, 0, 0x61]), lambda: dave.view_only)
    dave.dropped_input += len(fed.dropped)
    room.desktop_closed(dave)
    last = room.events[-1]
    assert last["event"] == "disconnect" and last["dropped_input"] == 1 and last["role"] == "guest"


async def test_service_state_applies_policy_and_version(room: Room) -> None:
    assert room._apply_state({"version": "a.1", "owner_away": "disconnect", "pending_requests": 2})
    assert room.owner_away == "disconnect" and room.pending_requests == 2
    assert not room._apply_state({"version": "a.1", "owner_away": "nonsense"})
    assert room.owner_away == "disconnect"


def test_room_model_shows_presence_to_the_owner_only(clock: ManualClock) -> None:
    room = Room("alice", "run", clock=clock)
    room.share_roles = share_roles_from(SHARES, "alice", "run")
    handlers = [open_desktop(room, ALICE), open_desktop(room, DAVE)]  # noqa: F841 (kept alive)
    assert {p["user"] for p in room.room_model(ALICE)["present"]} == {"alice", "dave"}
    assert "present" not in room.room_model(DAVE)
    assert room.room_model(DAVE)["view_only"] is True


async def test_start_and_stop_background_work(room: Room) -> None:
    room.start()
    await asyncio.sleep(0)
    assert room._tasks
    await room.stop()
    assert not room._tasks


SERVER_TOKEN = api_token("alice", "a7")


async def test_the_servers_own_token_is_nobody(room: Room) -> None:
    """Code in the instance reads JUPYTERHUB_API_TOKEN; the hub says it is alice's, but it is
    no person: refused everywhere, whoever holds it."""
    assert not await room.accepts(SERVER_TOKEN)
    assert await room.accepts(ALICE) and await room.accepts(BOB)
    assert await room.accepts(api_token("alice", "a8"))  # her own API token from the hub's token page


async def test_only_the_owner_in_person_makes_her_present(room: Room, clock: ManualClock) -> None:
    room.observe(FakeHandler(websocket=False), api_token("alice", "a8"), "api/contents/", "full")
    _h, script = open_desktop(room, api_token("alice", "a8"))
    room.observe(FakeHandler(), api_token("alice", "a8"), "api/kernels/1/channels", "full")
    room.tick()
    assert not room.owner_present()
    assert room.level_for_model(BOB) == "view"  # the room stays locked
    room.observe(FakeHandler(websocket=False), ALICE, "api/contents/", "full")
    assert room.owner_present() and room.level_for_model(BOB) == "full"


async def test_without_the_hubs_answer_no_owner_api_token_is_accepted(clock: ManualClock) -> None:
    class Down(FakeShares):
        async def own_token_id(self) -> str:
            raise OSError("hub down")

    room = Room("alice", "run", shares=Down(SHARES), clock=clock)
    assert not await room.accepts(SERVER_TOKEN)
    assert await room.accepts(ALICE) and await room.accepts(api_token("bob", "b1"))
