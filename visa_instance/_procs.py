"""Linux process helpers for the desktop launcher.

A stopped desktop must leave nothing behind. Signalling the process group is not enough (xterm
puts its shell in a new session), so the launcher becomes a child subreaper, asks the kernel to
signal it when its parent dies, and finds its whole family through /proc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
from dataclasses import dataclass

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

_libc: ctypes.CDLL | None = None


def _prctl(option: int, arg: int) -> bool:
    """Call prctl(2); False when it is unavailable (non-Linux) or refused."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return _libc.prctl(option, arg, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Have the kernel send ``sig`` to this process when its parent exits."""
    return _prctl(PR_SET_PDEATHSIG, int(sig))


def become_subreaper() -> bool:
    """Adopt orphaned descendants, so that none escapes the cleanup by double-forking."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


@dataclass(frozen=True)
class ProcInfo:
    """The fields of /proc/<pid>/stat we need."""

    pid: int
    ppid: int
    pgid: int
    state: str
    start_time: int
    comm: str


def read_proc(pid: int, proc: str = "/proc") -> ProcInfo | None:
    """Parse /proc/<pid>/stat (the command name may contain spaces and parentheses)."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            raw = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    head, _, rest = raw.rpartition(")")
    comm = head.partition("(")[2]
    fields = rest.split()
    try:
        return ProcInfo(pid, int(fields[1]), int(fields[2]), fields[0], int(fields[19]), comm)
    except (IndexError, ValueError):
        return None


def all_procs(proc: str = "/proc") -> list[ProcInfo]:
    """Every process visible now."""
    infos = []
    for name in os.listdir(proc):
        if name.isdigit():
            info = read_proc(int(name), proc)
            if info is not None:
                infos.append(info)
    return infos


def family(root: int, pgid: int | None = None, proc: str = "/proc") -> list[ProcInfo]:
    """Live (non-zombie) descendants of ``root`` plus members of ``pgid``, without ``root``."""
    infos = all_procs(proc)
    children: dict[int, list[ProcInfo]] = {}
    for info in infos:
        children.setdefault(info.ppid, []).append(info)
    found: dict[int, ProcInfo] = {}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child.pid not in found:
                found[child.pid] = child
                stack.append(child.pid)
    if pgid is not None:
        for info in infos:
            if info.pgid == pgid:
                found.setdefault(info.pid, info)
    found.pop(root, None)
    return [info for info in found.values() if info.state != "Z"]


def signal_all(infos: list[ProcInfo], sig: int) -> None:
    """Send ``sig`` to each process, ignoring those already gone."""
    for info in infos:
        try:
            os.kill(info.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            pass


def reap_children() -> list[tuple[int, int]]:
    """Collect every exited child without blocking; returns (pid, exit code) pairs."""
    reaped = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        reaped.append((pid, os.waitstatus_to_exitcode(status)))
    return reaped
