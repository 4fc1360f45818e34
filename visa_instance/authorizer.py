"""Who may do what inside a shared instance: member roles from hub shares, enforced here.

The hub lets a member through OAuth when a share gives them ``access:servers`` on this server;
what they may then do is decided in this process from the *role scope* their share carries
(``custom:visa-user``, ``custom:visa-guest``, ``custom:visa-support``, filtered to this
server; ``custom:visa-admin``, from a hub role, for facility administrators). The hub side
(`visa_collab.roles`) creates those shares; the two sides share only these names.

Where the role is read: JupyterHub 6.1 issues a member's OAuth token with the scopes of their
*roles* only (``OAuthAuthorizeHandler``: ``roles_to_scopes(get_roles_for(user))``), so a
share's custom scope never reaches the token, whatever ``oauth_client_allowed_scopes`` says.
The room therefore reads this server's shares from the hub's REST API with the server's own
token (``read:shares!server``, see `visa_collab.hub_config`) and looks members up there; a
role scope that does arrive in a token (administrators', or a future hub's share scopes) is
honoured too.

Two places enforce it:

* :class:`VisaAuthorizer` (``ServerApp.authorizer_class``) answers jupyter-server's
  ``@authorized`` checks (contents, kernels, terminals, sessions, the desktop page…);
* :func:`install_gate` wraps the identity provider, which *every* handler calls, so routes
  that never ask the Authorizer (JupyterLab's page, jupyter-server-proxy's proxies and bridges,
  any other extension's handlers) are closed too. For view-only members it is an allowlist:
  only the desktop page, its files, the filtering desktop websocket and the room API.

Levels: ``full`` (owner, USER while the owner is around, SUPPORT, administrators, hub
services), ``view`` (GUEST and watching services; USER while the room is locked), ``none`` (no role, or anyone but
full-access staff while the room is closed by the "disconnect everyone" policy).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from jupyter_server.auth.authorizer import Authorizer

# The contract with visa_collab.roles (tests/collab/test_contract.py checks both sides agree).
ROLE_SCOPES = {
    "user": "custom:visa-user",
    "guest": "custom:visa-guest",
    "support": "custom:visa-support",
}
ADMIN_SCOPE = "custom:visa-admin"

FULL, VIEW, NONE = "full", "view", "none"
FULL_ROLES = frozenset({"owner", "admin", "service", "support"})
# Hub services that only look (role "watcher", the GUEST's level): the trainer's grid reads
# thumbnails and the room; its token's access:servers reaches every server (docs/training.md).
WATCHING_SERVICES = frozenset({"visa-training"})

DESKTOP_RESOURCE = "visa-desktop"

# Paths (relative to the server's base URL) a view-only member may reach. Everything else,
# including routes added by extensions we do not know about, is refused.
_VIEW_ROUTES = re.compile(
    r"^(visa/desktop/?|visa/desktop/snapshot\.png|visa/static/.*|visa/novnc/.*|visa/api/room/?|desktop/.*|logout|oauth_callback"
    r"|visa/instrument/[A-Za-z0-9_-]+/?|instrument-[a-z0-9_-]+/.*)$"  # instrument panels, read-only
)
_NONE_ROUTES = re.compile(r"^(logout|oauth_callback|visa/api/room/?)$")


def role_of(
    model: Mapping[str, Any] | None, owner: str, server: str,
    share_roles: Mapping[str, str] | None = None,
) -> str | None:
    """The member role of a hub identity (model with its token's scopes) on owner/server.

    `share_roles` maps ``user:<name>`` / ``group:<name>`` to the role of their share of this
    server (:func:`share_role`); the strongest role found wins.
    """
    if not model:
        return None
    kind, name = model.get("kind", "user"), model.get("name")
    scopes = model.get("scopes") or []
    access = _has(scopes, "access:servers", owner, server)
    if kind == "service":
        # deployment-configured services the hub let through (e.g. the admin's tooling)
        if not access:
            return None
        return "watcher" if name in WATCHING_SERVICES else "service"
    if name == owner and kind == "user":
        return "owner"
    if not access:
        return None
    if ADMIN_SCOPE in scopes:
        return "admin"
    found = {role for role in ROLE_SCOPES if _has(scopes, ROLE_SCOPES[role], owner, server, unfiltered=False)}
    if share_roles:
        keys = [f"user:{name}"] + [f"group:{g}" for g in model.get("groups") or []]
        found |= {share_roles[k] for k in keys if k in share_roles}
    for role in ("support", "user", "guest"):  # strongest first
        if role in found:
            return role
    return None


def share_role(scopes: Any, owner: str, server: str) -> str | None:
    """The role a share's scopes give on owner/server (strongest), as the hub lists them."""
    for role in ("support", "user", "guest"):
        if _has(scopes, ROLE_SCOPES[role], owner, server, unfiltered=False):
            return role
    return None


def share_roles_from(shares: Any, owner: str, server: str) -> dict[str, str]:
    """``{"user:bob": "guest", "group:x": "user"}`` from the hub's list of this server's shares."""
    out: dict[str, str] = {}
    for share in shares or []:
        role = share_role(share.get("scopes") or [], owner, server)
        if role is None:
            continue
        if share.get("user"):
            out[f"user:{share['user']['name']}"] = role
        elif share.get("group"):
            out[f"group:{share['group']['name']}"] = role
    return out


def _has(scopes: Any, base: str, owner: str, server: str, unfiltered: bool = True) -> bool:
    wanted = {f"{base}!server={owner}/{server}", f"{base}!user={owner}"}
    if unfiltered:
        wanted.add(base)
    return bool(wanted.intersection(scopes))


def level_of(role: str | None, owner_present: bool, owner_away: str) -> str:
    """What a role may do now, given the owner's presence and the owner-away policy."""
    if role in FULL_ROLES:
        return FULL
    if role == "user":
        if owner_present:
            return FULL
        return VIEW if owner_away == "lock" else NONE
    if role in ("guest", "watcher"):
        return VIEW if owner_present or owner_away == "lock" else NONE
    return NONE


def route_allowed(level: str, path: str) -> bool:
    """May someone at `level` reach `path` (relative to the base URL, no leading slash)?"""
    if level == FULL:
        return True
    pattern = _VIEW_ROUTES if level == VIEW else _NONE_ROUTES
    return bool(pattern.match(path))


def action_allowed(level: str, action: str, resource: str) -> bool:
    """The Authorizer's answer for `level` (actions: read, write, execute)."""
    if level == FULL:
        return True
    return level == VIEW and resource == DESKTOP_RESOURCE and action == "read"


def signed_in(model: Mapping[str, Any] | None) -> bool:
    """Is this identity a person signed in at the hub right now, through OAuth?

    The hub's whoami gives the ``session_id`` of the login session an OAuth token was issued
    in, and None for API tokens: the server's own ``JUPYTERHUB_API_TOKEN`` (which every process
    in the instance can read) and tokens made on the hub's token page. Only such a person
    counts as *present*; code running in the instance holds no session.
    """
    return bool(model) and model.get("kind", "user") == "user" and bool(model.get("session_id"))


def hub_model(user: Any) -> Mapping[str, Any] | None:
    """The hub's identity model behind a jupyter-server User (None outside JupyterHub)."""
    return getattr(user, "hub_user", None)


class VisaAuthorizer(Authorizer):
    """jupyter-server's Authorizer for shared instances (``ServerApp.authorizer_class``).

    Outside JupyterHub (a plain ``jupyter server`` with a token) there are no members: the
    token holder is the owner and may do everything.
    """

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        model = hub_model(user)
        if model is None:
            return True
        room = handler.settings.get("visa_room")
        if room is None:  # extension not loaded: only the owner, administrators and services
            level = FULL if role_of(model, *_owner_server()) in FULL_ROLES else NONE
        else:
            level = room.level_for_model(model)
        allowed = action_allowed(level, action, resource)
        if not allowed:
            self.log.info("Refused %s %s on %s (level %s)", model.get("name"), action, resource, level)
        return allowed


def _owner_server() -> tuple[str, str]:
    import os

    return os.environ.get("JUPYTERHUB_USER", ""), os.environ.get("JUPYTERHUB_SERVER_NAME", "")


def install_gate(identity_provider: Any, room: Any, base_url: str) -> bool:
    """Wrap the identity provider so every request is checked against the member's level.

    JupyterHub's single-user extension forces its own identity provider class, so the gate
    wraps the instance's ``get_user`` rather than replacing the class. A refused request is
    answered like JupyterHub answers users without access: 403, no login redirect loop.
    Returns False (nothing installed) outside JupyterHub.
    """
    if not hasattr(identity_provider, "hub_auth"):
        return False
    original = identity_provider.get_user

    async def get_user(handler: Any) -> Any:
        if hasattr(handler, "_visa_gate_user"):
            return handler._visa_gate_user
        user = original(handler)
        if hasattr(user, "__await__"):
            user = await user
        model = hub_model(user)
        if model is not None:
            path = handler.request.path
            rel = path[len(base_url):] if path.startswith(base_url) else path.lstrip("/")
            if await room.accepts(model):
                await room.know(model)  # a member we have no role for yet: ask the hub first
                level = room.level_for_model(model)
                allowed = route_allowed(level, rel)
            else:
                # the server's own token, which code in the instance reads from its environment:
                # it stands for nobody, whoever holds it (a member removed since, for one)
                level, allowed = NONE, False
            if allowed:
                room.observe(handler, model, rel, level)
            else:
                room.log.info("Refused %s (%s) %s %s", model.get("name"), level, handler.request.method, rel)

                def forbid(*args: Any, **kwargs: Any) -> None:
                    from tornado.web import HTTPError

                    raise HTTPError(403, "Your role in this instance does not give access to this page.")

                handler.redirect = forbid
                user = None
        handler._visa_gate_user = user
        return user

    identity_provider.get_user = get_user
    return True
