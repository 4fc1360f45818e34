"""Resource limits and whole-tree process control with Linux control groups.

A sandbox's processes (Jupyter, Xvnc, the window manager, anything a user starts, even daemons
that double-fork) all stay in the instance's cgroup: the limits apply to all of them and stop
kills all of them. Both cgroup v1 (memory, cpu, pids controllers) and v2 are supported.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "cpu", "pids")
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class Limits:
    cpus: float
    memory_mb: int
    max_pids: int = 4096


class CgroupError(Exception):
    """Cgroups are missing or not writable: limits cannot be enforced."""


def limit_files(version: int, limits: Limits) -> dict[str, str]:
    """The control files to write and their values (pure, table-tested)."""
    memory = str(limits.memory_mb * 1024 * 1024)
    quota = str(max(1000, int(limits.cpus * CPU_PERIOD_US)))
    if version == 1:
        return {
            "memory/memory.limit_in_bytes": memory,
            "cpu/cpu.cfs_period_us": str(CPU_PERIOD_US),
            "cpu/cpu.cfs_quota_us": quota,
            "pids/pids.max": str(limits.max_pids),
        }
    return {
        "memory.max": memory,
        "memory.swap.max": "0",
        "cpu.max": f"{quota} {CPU_PERIOD_US}",
        "pids.max": str(limits.max_pids),
    }


class Cgroup:
    """One instance's cgroup, `<root>/<parent>/<name>` in each controller."""

    def __init__(self, name: str, parent: str = "visahub", root: Path = CGROUP_ROOT) -> None:
        self.name = name
        self.parent = parent
        self.root = root
        self.version = self.detect_version(root)

    @staticmethod
    def detect_version(root: Path = CGROUP_ROOT) -> int:
        if (root / "cgroup.controllers").exists():
            return 2
        if all((root / c).is_dir() for c in V1_CONTROLLERS):
            return 1
        raise CgroupError(f"no usable cgroup hierarchy under {root}")

    def dirs(self) -> list[Path]:
        if self.version == 2:
            return [self.root / self.parent / self.name]
        return [self.root / c / self.parent / self.name for c in V1_CONTROLLERS]

    def create(self, limits: Limits) -> None:
        """Create the cgroup with its limits; raise CgroupError if that is not allowed."""
        try:
            if self.version == 2:
                parent = self.root / self.parent
                parent.mkdir(exist_ok=True)
                wanted = "+memory +cpu +pids"
                (self.root / "cgroup.subtree_control").write_text(wanted)
                (parent / "cgroup.subtree_control").write_text(wanted)
            for d in self.dirs():
                d.mkdir(parents=True, exist_ok=True)
            base = self.root if self.version == 1 else self.dirs()[0]
            for rel, value in limit_files(self.version, limits).items():
                if self.version == 1:
                    controller, fname = rel.split("/")
                    path = self.root / controller / self.parent / self.name / fname
                else:
                    path = base / rel
                path.write_text(value)
        except OSError as e:
            raise CgroupError(f"cannot set limits in {self.dirs()[0]}: {e.strerror}") from e

    def set_cpu_weight(self, weight: int) -> None:
        """This cgroup's share of the CPU when CPUs are contended, 1-10000 where 100 is every other
        sandbox's (cgroup v1: cpu.shares, scaled from 1024); CgroupError if it cannot be set."""
        if self.version == 2:
            path, value = self.dirs()[0] / "cpu.weight", str(weight)
        else:
            path, value = self.root / "cpu" / self.parent / self.name / "cpu.shares", str(max(2, weight * 1024 // 100))
        try:
            path.write_text(value)
        except OSError as e:
            raise CgroupError(f"cannot set {path}: {e.strerror}") from e

    def procs_files(self) -> list[str]:
        """Paths a new process writes its pid to (for a pre-exec join, os-level only)."""
        return [str(d / "cgroup.procs") for d in self.dirs()]

    def pids(self) -> set[int]:
        """Processes in the cgroup now (empty if it does not exist)."""
        found: set[int] = set()
        for d in self.dirs():
            try:
                found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except (FileNotFoundError, ValueError):
                continue
        return found

    def contains(self, pid: int) -> bool:
        return pid in self.pids()

    def signal_all(self, sig: int = signal.SIGKILL) -> int:
        """Send `sig` to every process in the cgroup; return how many were signalled."""
        count = 0
        for pid in self.pids():
            try:
                os.kill(pid, sig)
                count += 1
            except ProcessLookupError:
                pass
        return count

    def remove(self) -> None:
        """Remove the (empty) cgroup directories; ignore ones already gone."""
        for d in self.dirs():
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                # still busy: the caller kills first; leave it for the next stop or delete
                pass


def join_cgroup_preexec(procs_files: list[str]):
    """A `preexec_fn` that puts the child in the cgroup before it execs.

    Uses only os-level calls (safe between fork and exec), so every later descendant is
    counted and limited from its first instruction.
    """

    def join() -> None:
        pid = str(os.getpid()).encode()
        for path in procs_files:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)

    return join
