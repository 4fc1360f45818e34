"""Pure builders for the OpenStack backend: names, tags, metadata, security groups, addresses.

Nothing here talks to the cloud, so each piece is tested as plain data. Names are deterministic
(a hub restarted in the middle of a spawn finds the server again); metadata says whose server it
is but never carries a secret (anyone in the project can read metadata; only user-data carries
the instance's token).
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_TAG_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
META_PREFIX = "visa-"
POOL_META = f"{META_PREFIX}pool"  # the warm pool a server waits in (removed at adoption)
PLAN_META = f"{META_PREFIX}plan"  # the plan a server was built for
RESUME_META = "visa-resume"  # fingerprint of the server's resume key (phonehome.resume_fingerprint)
#: Nova task states → what a person reads while the server builds (percent, text)
TASK_STATES = {
    None: (15, "The cloud accepted the request"),
    "scheduling": (20, "The cloud is choosing a host for the server"),
    "block_device_mapping": (25, "The cloud is preparing the server's disk"),
    "networking": (30, "The cloud is connecting the server to the network"),
    "spawning": (40, "The host is starting the server"),
}
#: phone-home stages → (percent, text)
STAGES = {
    "started": (60, "The instance booted and started VISA"),
    "account": (70, "Your account exists in the instance"),
    "data": (80, "The proposal's data is mounted read-only"),
    "jupyter-up": (90, "Jupyter is up in the instance; connecting through the hub"),
}


#: servers per listing page (why pages: openstack_cloud.list_servers)
LIST_PAGE = 50


def hub_tag(hub_id: str) -> str:
    """The one tag that finds every server of this hub in a single server-side filtered listing."""
    return f"visa-hub-{_TAG_SAFE.sub('-', hub_id)[:48]}"


def server_name(hub_id: str, owner: str, server: str) -> str:
    """`visa-<hub>-<hash of owner/server>`: stable across restarts, unique per named server."""
    digest = hashlib.sha256(f"{hub_id}\0{owner}\0{server}".encode()).hexdigest()[:16]
    return f"visa-{_TAG_SAFE.sub('-', hub_id)[:24]}-{digest}"


def _meta_value(value: str) -> str:
    """Nova metadata values: at most 255 characters; printable only."""
    return "".join(c for c in str(value) if c.isprintable())[:255]


def server_metadata(*, hub_id: str, owner: str, server: str, proposal: str, plan: str) -> dict[str, str]:
    """Who the server belongs to (for admins and the reconciler); never a secret."""
    return {f"{META_PREFIX}{k}": _meta_value(v) for k, v in (
        ("hub", hub_id), ("owner", owner), ("server", server), ("proposal", proposal), ("plan", plan),
    )}


def owner_of(metadata: Mapping[str, str]) -> tuple[str, str]:
    return metadata.get(f"{META_PREFIX}owner", ""), metadata.get(f"{META_PREFIX}server", "")


def build_progress(task_state: str | None) -> tuple[int, str]:
    return TASK_STATES.get(task_state, (35, f"The cloud is building the server ({task_state})"))


# -- security groups ----------------------------------------------------------------------------
def select_security_groups(policies: Sequence[Mapping[str, Any]], *, roles: Iterable[str],
                           instruments: Iterable[str], flavor: str) -> list[Mapping[str, Any]]:
    """The groups whose `when` matches: each key (roles, instruments, flavors) that is present
    must share an element with the instance's; an absent key matches everything."""
    have = {"roles": set(roles), "instruments": set(instruments), "flavors": {flavor}}
    chosen = []
    for policy in policies:
        when = policy.get("when", {}) or {}
        unknown = set(when) - set(have)
        if unknown:
            raise ValueError(f"security group {policy.get('name')!r}: unknown condition {sorted(unknown)}")
        if all(set(when[k]) & have[k] for k in when):
            chosen.append(policy)
    return chosen


RULE_KEYS = ("direction", "ethertype", "protocol", "port_range_min", "port_range_max", "remote_ip_prefix")


def rule_key(rule: Mapping[str, Any]) -> tuple:
    """What makes two rules the same (Neutron answers 409 on a duplicate)."""
    full = {"direction": "ingress", "ethertype": "IPv4", **rule}
    return tuple(full.get(k) for k in RULE_KEYS)


def missing_rules(wanted: Sequence[Mapping[str, Any]], existing: Iterable[Mapping[str, Any]]) -> list[dict]:
    have = {rule_key(r) for r in existing}
    out = []
    for rule in wanted:
        bad = set(rule) - set(RULE_KEYS)
        if bad:
            raise ValueError(f"unknown security group rule keys {sorted(bad)}")
        if rule_key(rule) not in have:
            out.append({"direction": "ingress", "ethertype": "IPv4", **rule})
            have.add(rule_key(rule))
    return out


# -- addresses ------------------------------------------------------------------------------------
def server_address(addresses: Mapping[str, Sequence[Mapping[str, Any]]], *, network: str = "",
                   kind: str = "fixed") -> str:
    """An IPv4 address of `kind` (fixed|floating) on `network` (any network if empty), or ""."""
    for net, entries in sorted(addresses.items()):
        if network and net != network:
            continue
        for entry in entries:
            if entry.get("OS-EXT-IPS:type", "fixed") == kind and entry.get("version", 4) == 4:
                return str(entry.get("addr", ""))
    return ""
