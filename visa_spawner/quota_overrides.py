"""Instance quotas an admin set for one person, without a hub restart: a file the ops console writes.

The file is `{"quota": {"<user>": <int -1..1000>}}`. An override replaces the catalogue's quota
(``auth_state["visa"]["quota"]``) wherever the hub applies it: -1 unlimited, 0 no new instance,
N at most N. It is read and written like the plan switch file (`plan_switch.read_switch_file`):
cached on its modification time, written atomically, a broken file keeps the last good answer.
"""
from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .plan_switch import read_switch_file, write_switch_file

QUOTA_MIN, QUOTA_MAX = -1, 1000
#: the console's writes are read-modify-write in executor threads: one at a time
_write_lock = threading.Lock()


def check_quota_value(value: Any) -> int:
    """An override as a whole number from -1 to 1000; ValueError with a message a person can act on."""
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"-?[0-9]{1,4}", text):
            raise ValueError(f"quota must be a whole number from {QUOTA_MIN} to {QUOTA_MAX}.")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int) or not QUOTA_MIN <= value <= QUOTA_MAX:
        raise ValueError(f"quota must be a whole number from {QUOTA_MIN} to {QUOTA_MAX}.")
    return value


def parse_overrides(text: str) -> Mapping[str, int]:
    """The overrides of the file's text (read-only); ValueError when it is not the expected shape."""
    data = json.loads(text)
    quotas = data.get("quota") if isinstance(data, dict) else None
    if not isinstance(quotas, dict) or any(isinstance(q, str) for q in quotas.values()):
        raise ValueError('expected {"quota": {"<user>": <-1..1000>}}')
    return MappingProxyType({user: check_quota_value(q) for user, q in quotas.items()})


def read_overrides(path: str | os.PathLike) -> dict[str, int]:
    """User → overridden quota (none if the file does not exist, the last good answer if broken)."""
    return dict(read_switch_file(path, parse_overrides, MappingProxyType({}), "Quota overrides file"))


def write_override(path: str | os.PathLike, user: str, quota: int | None) -> None:
    """Set `user`'s override to `quota` (checked), or remove it with None; the file is replaced atomically."""
    if quota is not None:
        quota = check_quota_value(quota)
    with _write_lock:
        overrides = read_overrides(path)
        if quota is None:
            overrides.pop(user, None)
        else:
            overrides[user] = quota
        write_switch_file(path, {"quota": overrides})


def effective_quota(entitlements: Mapping, override: int | None) -> int:
    """The quota the hub applies: the override if any, else the catalogue's (2 when it says nothing)."""
    return int(entitlements.get("quota", 2)) if override is None else override
