"""Roles, scopes and levels on both sides (hub: visa_collab.roles; instance: visa_instance.authorizer)."""
from __future__ import annotations

import pytest

from visa_collab import roles as hub
from visa_instance import authorizer as inst

OWNER, SERVER = "alice", "beamtime"
F = f"!server={OWNER}/{SERVER}"


def test_both_sides_use_the_same_scope_names() -> None:
    assert {r.value: s for r, s in hub.ROLE_SCOPES.items()} == inst.ROLE_SCOPES
    assert hub.ADMIN_SCOPE == inst.ADMIN_SCOPE
    assert set(hub.CUSTOM_SCOPES) == {*hub.ROLE_SCOPES.values(), hub.ADMIN_SCOPE}
    for definition in hub.CUSTOM_SCOPES.values():
        assert definition["description"]


@pytest.mark.parametrize("role", hub.GRANTABLE)
def test_a_share_read_back_by_the_instance_gives_its_role(role: hub.Role) -> None:
    """The scopes the service grants, as the member's token carries them, give that role."""
    scopes = hub.share_scopes(role, OWNER, SERVER)
    assert scopes[0] == f"access:servers{F}"
    assert hub.role_of_share(scopes) is role
    model = {"kind": "user", "name": "bob", "scopes": scopes + ["read:users:name!user=bob"]}
    assert inst.role_of(model, OWNER, SERVER) == role.value
    # ...and every role scope is let into the instance's OAuth tokens ("!server": this server)
    assert scopes[1].replace(F, "!server") in hub.oauth_client_allowed_scopes()


@pytest.mark.parametrize("model, role", [
    (None, None),
    ({"kind": "user", "name": OWNER, "scopes": [f"access:servers{F}"]}, "owner"),
    ({"kind": "user", "name": "bob", "scopes": [f"access:servers{F}"]}, None),  # a bare share: nothing
    ({"kind": "user", "name": "bob", "scopes": [f"access:servers{F}", f"custom:visa-guest{F}"]}, "guest"),
    ({"kind": "user", "name": "bob", "scopes": [f"access:servers{F}", f"custom:visa-guest{F}", f"custom:visa-user{F}"]}, "user"),
    ({"kind": "user", "name": "bob", "scopes": [f"access:servers{F}", "custom:visa-user!server=alice/other"]}, None),
    ({"kind": "user", "name": "bob", "scopes": [f"access:servers{F}", "custom:visa-user"]}, None),  # unfiltered: never ours
    ({"kind": "user", "name": "bob", "scopes": [f"custom:visa-user{F}"]}, None),  # no access scope
    ({"kind": "user", "name": "root", "scopes": ["access:servers", "custom:visa-admin"]}, "admin"),
    ({"kind": "user", "name": "eve", "scopes": ["access:servers!user=alice", f"custom:visa-support{F}"]}, "support"),
    ({"kind": "service", "name": "tests", "scopes": ["access:servers"]}, "service"),
    ({"kind": "service", "name": "tests", "scopes": []}, None),
])
def test_role_of(model, role) -> None:
    assert inst.role_of(model, OWNER, SERVER) == role


@pytest.mark.parametrize("role, owner_present, policy, level", [
    ("owner", False, "disconnect", "full"),
    ("admin", False, "disconnect", "full"),
    ("support", False, "disconnect", "full"),
    ("service", False, "lock", "full"),
    ("user", True, "lock", "full"),
    ("user", False, "lock", "view"),
    ("user", False, "disconnect", "none"),
    ("guest", True, "disconnect", "view"),
    ("guest", False, "lock", "view"),
    ("guest", False, "disconnect", "none"),
    (None, True, "lock", "none"),
])
def test_level_of(role, owner_present, policy, level) -> None:
    assert inst.level_of(role, owner_present, policy) == level


@pytest.mark.parametrize("level, path, allowed", [
    ("full", "lab", True),
    ("full", "proxy/8080/", True),
    ("view", "visa/desktop", True),
    ("view", "visa/static/desktop.js", True),
    ("view", "desktop/", True),
    ("view", "visa/api/room", True),
    ("view", "lab", False),
    ("view", "lab/tree/x.ipynb", False),
    ("view", "api/contents/", False),
    ("view", "api/kernels", False),
    ("view", "terminals/websocket/1", False),
    ("view", "proxy/8080/", False),
    ("view", "server-proxy/servers-info", False),
    ("view", "files/data.h5", False),
    ("view", "api/collaboration/room/json:notebook:1", False),
    ("view", "visa/desktopx", False),
    ("none", "visa/desktop", False),
    ("none", "desktop/", False),
    ("none", "visa/api/room", True),
    ("none", "logout", True),
])
def test_route_allowed(level, path, allowed) -> None:
    assert inst.route_allowed(level, path) is allowed


@pytest.mark.parametrize("level, action, resource, allowed", [
    ("full", "execute", "kernels", True),
    ("view", "read", "visa-desktop", True),
    ("view", "write", "visa-desktop", False),
    ("view", "read", "contents", False),
    ("view", "execute", "terminals", False),
    ("none", "read", "visa-desktop", False),
])
def test_action_allowed(level, action, resource, allowed) -> None:
    assert inst.action_allowed(level, action, resource) is allowed


@pytest.mark.parametrize("value, message", [
    ("owner", "cannot be granted"), ("root", "Unknown role"), ("", "Unknown role"), (None, "Give a role"),
    (3, "Give a role"),
])
def test_parse_role_refuses(value, message) -> None:
    with pytest.raises(hub.RoleError, match=message):
        hub.parse_role(value)


def test_parse_role_accepts() -> None:
    assert hub.parse_role(" Guest ") is hub.Role.GUEST


TEAM = ["proposal:P-1", "role:user"]


@pytest.mark.parametrize("role, groups, proposal, refused", [
    (hub.Role.USER, TEAM, "P-1", None),
    (hub.Role.GUEST, TEAM, "P-1", None),
    (hub.Role.USER, ["proposal:P-2"], "P-1", "not on the team of proposal P-1"),
    (hub.Role.GUEST, [], None, "has no proposal"),
    (hub.Role.SUPPORT, ["role:it_support"], "P-1", None),
    (hub.Role.SUPPORT, ["role:admin"], "P-1", None),
    (hub.Role.SUPPORT, ["role:instrument_scientist", "proposal:P-1"], "P-1", None),
    (hub.Role.SUPPORT, ["role:instrument_scientist", "proposal:P-2"], "P-1", "not facility support staff"),
    (hub.Role.SUPPORT, ["role:scientific_computing"], "P-1", None),
    (hub.Role.SUPPORT, TEAM, "P-1", "not facility support staff"),
])
def test_refusal(role, groups, proposal, refused) -> None:
    why = hub.refusal(role, "bob", groups, proposal)
    assert (why is None) if refused is None else (refused in why)


@pytest.mark.parametrize("groups, proposal, may", [
    (["role:it_support"], None, True),
    (["role:instrument_scientist", "proposal:P-1"], "P-1", True),
    (["role:instrument_scientist"], "P-1", False),
    (["role:scientific_computing"], "P-1", False),  # offered by owners, not on request
    (["proposal:P-1"], "P-1", False),
])
def test_may_request_support(groups, proposal, may) -> None:
    assert hub.may_request_support(groups, proposal) is may
