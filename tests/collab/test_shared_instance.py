"""A real hub, the collaboration service and one shared sandbox instance: who may do what.

alice (PI of P-2026-011) owns the instance; bob (co-proposer) is USER, dave (the proposal's
instrument scientist) GUEST, erin (IT support) SUPPORT; carol is on another proposal, frank is a
guest account with open data only, admin is a facility administrator.
"""
from __future__ import annotations

import random
import string
import struct
import tempfile
from pathlib import Path

import pytest

from tests.collab.helpers import Person
from tests.hubtools import Hub, run_code
from tests.rfb import RfbClient, wait_closed
from tests.spawner.sandbox.sandbox_probe import account
from tests.support import wait_for
from visa_instance.rfb_filter import EXTENDED_CLIPBOARD

pytestmark = pytest.mark.root

OWNER, PROPOSAL = "alice", "P-2026-011"
ROLES = {"bob": "user", "dave": "guest", "erin": "support"}
PEOPLE = ["alice", "bob", "dave", "erin", "carol", "frank", "admin"]


@pytest.fixture(scope="module")
def instance(collab_hub: Hub, person) -> str:
    """alice's running instance, shared with bob, dave and erin through the service."""
    for name in PEOPLE:
        person(name)  # everyone logs in once: the hub knows people who have
    alice = person(OWNER)
    r = alice.new_instance(name="Shared run", proposal=PROPOSAL, plan="sandbox-small", screen="1280x720",
                           keyboard="fr")
    assert r.status_code == 302, r.text[:500]
    server = r.headers["location"].rsplit("/", 1)[1]
    collab_hub.wait_ready(OWNER, server)
    for member, role in ROLES.items():
        r = alice.collab("POST", f"instances/{OWNER}/{server}/members", {"member": member, "role": role})
        assert r.status_code == 201, r.text
    yield server
    collab_hub.delete_server(OWNER, server)


@pytest.fixture(scope="module")
def owner_desktop(instance: str, person) -> RfbClient:
    """alice's own desktop connection, open for the whole module: the owner is present.

    She clicks into the terminal and types until a command of hers takes effect: the first
    keystrokes a freshly started desktop receives can be lost while it settles.
    """
    alice = person(OWNER)
    alice.open_instance(OWNER, instance, "visa/desktop")
    client = RfbClient(alice.websocket(OWNER, instance, "desktop/"))
    client.settled()  # a desktop still drawing its panel and file manager can take the first click
    client.click(640, 360)
    owner_types_until(alice, instance, client, f"warmup{marker()}")
    yield client
    client.close()


def marker() -> str:
    return "".join(random.choice(string.ascii_lowercase) for _ in range(10))


def home_file_exists(alice: Person, server: str, name: str) -> bool:
    path = f"api/contents/home/{account(OWNER, server)}/{name}"
    return alice.instance_call("GET", OWNER, server, path).status_code == 200


def type_command(client: RfbClient, command: str) -> None:
    client.type(f"cd\n{command}\n")  # the terminal has the focus (the owner clicked it)


def owner_types_until(alice: Person, server: str, client: RfbClient, name: str) -> None:
    """The owner's input takes effect (retyped if the very first keys met a desktop still settling)."""
    for attempt in range(3):
        if attempt:  # the terminal may have been mapped after the first click: give it the focus again
            client.settled()
            client.click(640, 360)
        type_command(client, f"touch {name}")
        try:
            wait_for(lambda: home_file_exists(alice, server, name), 15, f"{name} created by typing")
            return
        except TimeoutError as e:
            if attempt == 2:
                shot = Path(tempfile.gettempdir()) / f"{name}.png"
                client.save_png(shot)
                raise TimeoutError(f"{e} (the owner's screen: {shot})") from None


# -- the matrix ------------------------------------------------------------------------------------

ALLOW, DENY = "allow", "deny"
FULL_INSTANCE = {"lab": ALLOW, "contents": ALLOW, "kernels": ALLOW, "terminals": ALLOW, "desktop page": ALLOW,
                 "desktop websocket": ALLOW, "desktop input": ALLOW}
VIEW_INSTANCE = {"lab": DENY, "contents": DENY, "kernels": DENY, "terminals": DENY, "desktop page": ALLOW,
                 "desktop websocket": ALLOW, "desktop input": DENY}
NO_INSTANCE = {k: DENY for k in FULL_INSTANCE}
MATRIX = {
    "alice": {**FULL_INSTANCE, "collab API": ALLOW, "audit log": ALLOW},  # owner
    "bob": {**FULL_INSTANCE, "collab API": DENY, "audit log": DENY},  # user
    "dave": {**VIEW_INSTANCE, "collab API": DENY, "audit log": DENY},  # guest
    "erin": {**FULL_INSTANCE, "collab API": DENY, "audit log": DENY},  # support
    "carol": {**NO_INSTANCE, "collab API": DENY, "audit log": DENY},  # another proposal's PI
    "frank": {**NO_INSTANCE, "collab API": DENY, "audit log": DENY},  # stranger (open data only)
    "admin": {**FULL_INSTANCE, "collab API": ALLOW, "audit log": ALLOW},  # facility administrator
}
HTTP_ROUTES = {"lab": "lab", "contents": "api/contents/", "kernels": "api/kernels", "terminals": "api/terminals",
               "desktop page": "visa/desktop"}


def test_authorization_matrix(collab_hub: Hub, person, instance: str, owner_desktop: RfbClient, artifacts) -> None:
    alice = person(OWNER)
    seen: dict[str, dict[str, str]] = {}
    clients: dict[str, RfbClient] = {}
    for name in PEOPLE:
        who = person(name)
        row = seen[name] = {}
        who.open_instance(OWNER, instance, "visa/desktop")  # OAuth round trip (and confirmation) if let in
        for route, path in HTTP_ROUTES.items():
            r = who.open_instance(OWNER, instance, path) if route in ("lab", "desktop page") else \
                who.instance_call("GET", OWNER, instance, path)
            assert r.status_code in (200, 403), (name, route, r.status_code, r.url)
            row[route] = ALLOW if r.status_code == 200 else DENY
            if r.status_code == 403:
                assert PROPOSAL not in r.text, (name, route)  # nothing of the instance leaks
        try:
            clients[name] = RfbClient(who.websocket(OWNER, instance, "desktop/"))
            clients[name].screen()
            row["desktop websocket"] = ALLOW
        except Exception as e:  # websocket.WebSocketBadStatusException: Handshake status 403
            assert "403" in str(e), (name, repr(e))
            row["desktop websocket"] = DENY
        r = who.collab("GET", f"instances/{OWNER}/{instance}")
        assert r.status_code in (200, 403), (name, r.status_code, r.text)
        row["collab API"] = ALLOW if r.status_code == 200 else DENY
        r = who.collab("GET", f"instances/{OWNER}/{instance}/audit")
        row["audit log"] = ALLOW if r.status_code == 200 else DENY

    # desktop input: each connected person types a command in the shared terminal; the owner
    # types last and waits for hers, so every earlier keystroke that reached the desktop has
    # been acted on (one X server, one terminal, in order).
    markers = {}
    for name, client in clients.items():
        if name == OWNER:
            continue
        markers[name] = f"{name}{marker()}"
        type_command(client, f"touch {markers[name]}")
        client.screen()  # barrier: the server has read (or we dropped) everything sent
    final = f"owner{marker()}"
    owner_types_until(alice, instance, owner_desktop, final)
    owner_desktop.screen()
    owner_desktop.save_png(artifacts / "collab-matrix-desktop.png")
    seen[OWNER]["desktop input"] = ALLOW
    for name in PEOPLE:
        if name == OWNER:
            continue
        if name not in clients:
            seen[name]["desktop input"] = DENY
        else:
            seen[name]["desktop input"] = ALLOW if home_file_exists(alice, instance, markers[name]) else DENY
    for client in clients.values():
        client.close()
    assert seen == MATRIX


def test_a_user_member_runs_code_a_guest_cannot_start_a_kernel(person, instance: str, owner_desktop) -> None:
    from tests.hubtools import run_code

    bob, dave = person("bob"), person("dave")
    out = run_code(bob, OWNER, instance, "import os; print('uid', os.getuid())")
    assert out.startswith("uid ") and out.strip() != "uid 0"
    r = dave.instance_call("POST", OWNER, instance, "api/kernels", json={"name": "data-analysis"})
    assert r.status_code == 403
    r = dave.instance_call("PUT", OWNER, instance, "api/contents/home/x.txt",
                           json={"type": "file", "format": "text", "content": "hi"})
    assert r.status_code == 403


def test_a_guest_crafting_input_by_hand_changes_nothing(person, instance: str, owner_desktop: RfbClient, artifacts) -> None:
    """dave's page is view-only; he sends keys and clicks anyway, with a real RFB client."""
    alice, dave = person(OWNER), person("dave")
    guest = RfbClient(dave.websocket(OWNER, instance, "desktop/"))
    before = guest.screen()
    name = f"crafted{marker()}"
    type_command(guest, f"touch {name}")
    guest.ws.send_binary(bytes([255, 0, 0, 1, 0, 0, 0, 0x61, 0, 0, 0, 30]))  # QEMU extended key event
    guest.ws.send_binary(bytes([6, 0, 0, 0, 0, 0, 0, 4]) + b"evil")  # clipboard
    after = guest.screen()
    assert after == before, "the guest's input changed the screen"
    guest.save_png(artifacts / "collab-guest-view.png")
    final = f"owner{marker()}"
    owner_types_until(alice, instance, owner_desktop, final)
    assert guest.screen() != after, "the owner's typing did not show on the guest's screen"
    assert not home_file_exists(alice, instance, name)
    guest.close()
    # the audit log counts what was dropped
    log = wait_for(lambda: [a for a in alice.collab("GET", f"instances/{OWNER}/{instance}/audit").json()
                            if a["action"] == "disconnect" and a["member"] == "dave" and a["detail"].get("dropped_input")],
                   15, "dave's disconnection with dropped input in the audit log")
    assert log[0]["role"] == "guest" and log[0]["granted_by"] == OWNER


def test_a_guest_sending_garbage_is_disconnected(person, instance: str, owner_desktop) -> None:
    dave = person("dave")
    guest = RfbClient(dave.websocket(OWNER, instance, "desktop/"))
    guest.screen()
    guest.ws.send_binary(bytes([7, 1, 2, 3]))  # no such client message
    wait_closed(guest)


# The desktop's clipboard, driven from inside the instance as alice (xclip on her desktop's display,
# found from a desktop process's environment), the way an application's copy and paste use it.
DESKTOP_X_ENV = """
import os, subprocess
env = None
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        pairs = dict(v.split(b"=", 1) for v in open(f"/proc/{pid}/environ", "rb").read().split(b"\\0") if b"=" in v)
    except OSError:
        continue
    if b"XAUTHORITY" in pairs and b"DISPLAY" in pairs:
        env = {**os.environ, "DISPLAY": pairs[b"DISPLAY"].decode(), "XAUTHORITY": pairs[b"XAUTHORITY"].decode()}
        break
"""


def desktop_copy(alice: Person, server: str, text: str) -> None:
    out = run_code(alice, OWNER, server, DESKTOP_X_ENV + f"""
p = subprocess.Popen(["xclip", "-quiet", "-selection", "clipboard", "-i"], env=env, stdin=subprocess.PIPE,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
p.stdin.write({text!r}.encode()); p.stdin.close()
print("copied on", env["DISPLAY"])
""")
    assert "copied on :" in out, out


def desktop_clipboard(alice: Person, server: str) -> str:
    return run_code(alice, OWNER, server, DESKTOP_X_ENV + """
r = subprocess.run(["xclip", "-o", "-selection", "clipboard"], env=env, capture_output=True, timeout=10)
print(repr(r.stdout.decode()))
""").strip()


def test_the_clipboard_reaches_a_user_member_and_never_a_guest(person, instance: str, owner_desktop) -> None:
    """Through the hub, with real RFB clients: a copy in alice's desktop reaches bob (USER) and not
    dave (GUEST, who asks for the extended clipboard as noVNC does); bob's paste lands in the
    desktop, dave's never does."""
    alice = person(OWNER)
    bob = RfbClient(person("bob").websocket(OWNER, instance, "desktop/"))
    dave = RfbClient(person("dave").websocket(OWNER, instance, "desktop/"))
    dave.ws.send_binary(struct.pack(">BxHii", 2, 2, 0, EXTENDED_CLIPBOARD))
    bob.screen(), dave.screen()
    secret = f"copied by alice {marker()}"
    desktop_copy(alice, instance, secret)
    wait_for(lambda: (bob.screen(), secret.encode() in bob.cut_texts)[1], 20, "alice's copy at bob's client")
    dave.screen()  # a barrier: anything Xvnc sent dave before this frame has been read
    assert dave.cut_texts == [], dave.cut_texts

    dave.ws.send_binary(struct.pack(">Bxxxi", 6, 14) + b"dave was here!")
    dave.screen()  # Xvnc answers this after whatever of dave's came before it
    assert desktop_clipboard(alice, instance) == repr(secret)
    pasted = f"pasted by bob {marker()}"
    bob.ws.send_binary(struct.pack(">Bxxxi", 6, len(pasted)) + pasted.encode())
    wait_for(lambda: desktop_clipboard(alice, instance) == repr(pasted), 20, "bob's paste in alice's desktop")
    bob.close()
    dave.close()


def test_presence_shows_who_is_connected(person, instance: str, owner_desktop) -> None:
    alice, bob = person(OWNER), person("bob")
    client = RfbClient(bob.websocket(OWNER, instance, "desktop/"))
    client.screen()

    def bob_on_desktop():
        presence = alice.collab("GET", f"instances/{OWNER}/{instance}").json()["presence"]
        return any(p["user"] == "bob" and p["channel"] == "desktop" for p in presence) and presence

    presence = wait_for(bob_on_desktop, 15, "bob in the presence list")
    assert any(p["user"] == OWNER and p["channel"] == "desktop" for p in presence)
    room = alice.instance_call("GET", OWNER, instance, "visa/api/room").json()
    assert room["is_owner"] and any(p["user"] == "bob" for p in room["present"])
    assert "present" not in bob.instance_call("GET", OWNER, instance, "visa/api/room").json()
    client.close()


def test_role_change_and_revocation_reach_open_connections(person, instance: str, owner_desktop) -> None:
    alice, bob = person(OWNER), person("bob")
    client = RfbClient(bob.websocket(OWNER, instance, "desktop/"))
    client.screen()
    r = alice.collab("PATCH", f"instances/{OWNER}/{instance}/members/bob", {"role": "guest"})
    assert r.status_code == 200, r.text
    wait_for(lambda: bob.instance_call("GET", OWNER, instance, "visa/api/room").json()["level"] == "view", 10,
             "bob view-only")
    assert bob.instance_call("GET", OWNER, instance, "api/contents/").status_code == 403
    name = f"demoted{marker()}"
    type_command(client, f"touch {name}")
    client.screen()
    owner_types_until(alice, instance, owner_desktop, f"owner{marker()}")
    assert not home_file_exists(alice, instance, name)
    r = alice.collab("DELETE", f"instances/{OWNER}/{instance}/members/bob")
    assert r.status_code == 200 and r.json()["restart_suggested"] is True  # bob ran code: restart offered
    wait_closed(client)
    assert bob.instance_call("GET", OWNER, instance, "visa/desktop").status_code == 403
    r = alice.collab("POST", f"instances/{OWNER}/{instance}/members", {"member": "bob", "role": "user"})
    assert r.status_code == 201
    wait_for(lambda: bob.instance_call("GET", OWNER, instance, "api/contents/").status_code == 200, 10,
             "bob back in as user")


def test_owner_away_lock_then_disconnect(collab_hub: Hub, person, instance: str, owner_desktop: RfbClient) -> None:
    """Last: closes the owner's connection. lock → bob watches only; disconnect → bob and dave
    are out; erin (support) keeps working throughout; the owner coming back restores bob."""
    alice, bob, dave, erin = (person(n) for n in ("alice", "bob", "dave", "erin"))
    bob_desktop = RfbClient(bob.websocket(OWNER, instance, "desktop/"))
    dave_desktop = RfbClient(dave.websocket(OWNER, instance, "desktop/"))
    bob_desktop.screen()
    dave_desktop.screen()
    owner_desktop.close()  # alice leaves (and makes no other request from now on)

    def level(who: Person) -> str:
        return who.instance_call("GET", OWNER, instance, "visa/api/room").json()["level"]

    wait_for(lambda: level(bob) == "view", 30, "the room to lock when the owner left")
    assert bob.instance_call("GET", OWNER, instance, "api/contents/").status_code == 403
    assert erin.instance_call("GET", OWNER, instance, "api/contents/").status_code == 200
    name = f"locked{marker()}"
    type_command(bob_desktop, f"touch {name}")
    bob_desktop.screen()

    r = alice.collab("PUT", f"instances/{OWNER}/{instance}/policy", {"owner_away": "disconnect"})
    assert r.status_code == 200
    wait_closed(bob_desktop)
    wait_closed(dave_desktop)
    assert bob.instance_call("GET", OWNER, instance, "visa/desktop").status_code == 403
    assert dave.instance_call("GET", OWNER, instance, "visa/desktop").status_code == 403
    assert erin.instance_call("GET", OWNER, instance, "api/contents/").status_code == 200

    # the owner comes back: bob has full control again (and his locked keystrokes never ran)
    back = RfbClient(alice.websocket(OWNER, instance, "desktop/"))
    back.screen()
    wait_for(lambda: level(bob) == "full", 15, "bob's control back with the owner")
    owner_types_until(alice, instance, back, f"owner{marker()}")
    assert not home_file_exists(alice, instance, name)
    actions = [a["action"] for a in alice.collab("GET", f"instances/{OWNER}/{instance}/audit").json()]
    assert "owner-away" in actions and "owner-back" in actions and "set-policy" in actions
    r = alice.collab("PUT", f"instances/{OWNER}/{instance}/policy", {"owner_away": "lock"})
    assert r.status_code == 200
    back.close()


def test_members_page_shows_members_presence_and_audit(person, instance: str) -> None:
    alice = person(OWNER)
    page = alice.service_get(f"instances/{OWNER}/{instance}")
    assert page.status_code == 200
    for text in ('data-member="bob"', 'data-member="dave"', 'data-member="erin"', "Audit log", "grant"):
        assert text in page.text
    assert person("bob").service_get(f"instances/{OWNER}/{instance}").status_code == 403
    index = person("bob").service_get("").text
    assert "Shared run" in index and 'id="visa-shared"' in index
