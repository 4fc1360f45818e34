"""The training service inside instances (issue 19 review): its token's ``access:servers`` reaches
every server of every user, so an instance lets it only look (thumbnail, room), as a GUEST would:
no kernels, terminals, files or Lab. Other hub services keep full access. Pure (fast)."""
from __future__ import annotations

from visa_instance.authorizer import (
    DESKTOP_RESOURCE,
    FULL,
    VIEW,
    WATCHING_SERVICES,
    action_allowed,
    level_of,
    role_of,
    route_allowed,
)
from visa_instance.room import Room
from visa_training.hub_config import SERVICE

TRAINING = {"kind": "service", "name": SERVICE, "scopes": ["access:servers", "admin:servers"]}


def test_the_training_service_only_watches_any_instance() -> None:
    assert SERVICE in WATCHING_SERVICES  # the two sides name the same service
    role = role_of(TRAINING, "alice", "embargoed-run")
    assert role == "watcher"
    level = level_of(role, owner_present=True, owner_away="lock")
    assert level == VIEW
    for path in ("visa/desktop/snapshot.png", "visa/api/room"):
        assert route_allowed(level, path), path
    for path in ("lab", "api/contents/data", "api/kernels", "terminals/websocket/1", "api/sessions"):
        assert not route_allowed(level, path), path
    assert action_allowed(level, "read", DESKTOP_RESOURCE)
    assert not action_allowed(level, "execute", "kernels") and not action_allowed(level, "read", "contents")
    assert "present" in Room("alice", "course-a").room_model(TRAINING)  # the grid's presence still works


def test_other_services_keep_full_access_and_no_access_is_none() -> None:
    other = {"kind": "service", "name": "admin-tooling", "scopes": ["access:servers"]}
    assert level_of(role_of(other, "alice", "run"), True, "lock") == FULL
    assert role_of({**TRAINING, "scopes": []}, "alice", "run") is None
    assert role_of({"kind": "user", "name": SERVICE, "scopes": ["access:servers"]}, "alice", "run") is None
