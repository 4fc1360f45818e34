"""Linux process helpers for the desktop launcher.

A stopped desktop must leave nothing behind. Signalling the process group is not enough (xterm
puts its shell in a new session), so the launcher becomes a child subreaper, asks the kernel to
signal it when its parent dies, and finds its whole family with psutil.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
from dataclasses import dataclass

import psutil

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
    """What we need to know of one process, read once (the process may be gone a moment later)."""

    pid: int
    ppid: int
    pgid: int
    status: str  # psutil.STATUS_*
    create_time: float
    comm: str


def _info(process: psutil.Process) -> ProcInfo | None:
    try:
        with process.oneshot():
            return ProcInfo(process.pid, process.ppid(), os.getpgid(process.pid), process.status(),
                            process.create_time(), process.name())
    except (psutil.Error, OSError):  # gone (or not ours to read) since it was listed
        return None


def read_proc(pid: int) -> ProcInfo | None:
    """The process ``pid`` now, or None if there is none."""
    try:
        return _info(psutil.Process(pid))
    except psutil.Error:
        return None


def family(root: int, pgid: int | None = None) -> list[ProcInfo]:
    """Live (non-zombie) descendants of ``root`` plus members of ``pgid``, without ``root``."""
    found: dict[int, psutil.Process] = {}
    try:
        found.update((child.pid, child) for child in psutil.Process(root).children(recursive=True))
    except psutil.Error:
        pass
    if pgid is not None:
        for process in psutil.process_iter():
            try:
                if os.getpgid(process.pid) == pgid:
                    found.setdefault(process.pid, process)
            except OSError:
                continue
    found.pop(root, None)
    infos = (_info(process) for process in found.values())
    return [info for info in infos if info is not None and info.status != psutil.STATUS_ZOMBIE]


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
