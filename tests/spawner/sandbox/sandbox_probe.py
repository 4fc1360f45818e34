"""Look at a sandbox from the host: its cgroup, its account's processes."""
from __future__ import annotations

import pwd
from pathlib import Path

from visa_spawner.backends.sandbox.cgroups import Cgroup
from visa_spawner.backends.sandbox.command import account_name


def account(owner: str, server: str) -> str:
    return account_name(owner, server)


def cgroup_pids(owner: str, server: str) -> set[int]:
    return Cgroup(account(owner, server)).pids()


def processes_of(owner: str, server: str) -> list[str]:
    """Every live process on the host running as the instance's uid (command names).

    Zombies are skipped: they run nothing and hold nothing but a pid until their parent (here,
    possibly the container's init after the sandbox's outer bwrap died) reaps them.
    """
    try:
        uid = pwd.getpwnam(account(owner, server)).pw_uid
    except KeyError:
        return []
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if int(fields.get("Uid", "-1 0").split()[0]) == uid and not fields.get("State", "").strip().startswith("Z"):
            found.append(f"{status.parent.name}:{fields.get('Name', '?').strip()}")
    return found


def memory_limit_mb(owner: str, server: str) -> int:
    cg = Cgroup(account(owner, server))
    if cg.version == 1:
        path = cg.root / "memory" / cg.parent / cg.name / "memory.limit_in_bytes"
    else:
        path = cg.dirs()[0] / "memory.max"
    return int(path.read_text()) >> 20
