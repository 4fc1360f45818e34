"""Starting, watching and stopping the lab's processes, and only the lab's.

Each service runs in its own session (so its process group holds its workers) and is recorded in
run/NAME.json with its pid and the kernel's start time of that pid. `stop` signals a group only
while the record still describes it: a pid reused by another program is never signalled.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class ServiceFailed(RuntimeError):
    """A service did not come up: the message names it and ends with the tail of its log."""


def tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (index 0 = state, 2 = pgrp, 3 = session, 19 = start)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()


def start_time(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def group_members(pgid: int) -> list[int]:
    """Live processes of session/group `pgid` (zombies left out: they are already gone)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and fields[0] != "Z" and int(fields[2]) == pgid and int(fields[3]) == pgid:
                members.append(int(entry.name))
    return members


class Service:
    """One recorded process group of the lab."""

    def __init__(self, run: Path, logs: Path, name: str) -> None:
        self.name, self.record, self.log = name, run / f"{name}.json", logs / f"{name}.log"

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.log, "ab") as out:
            p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env={**os.environ, **(env or {})}, start_new_session=True)
        self.record.write_text(json.dumps({"pid": p.pid, "start": start_time(p.pid), "argv": argv}))

    def pid(self) -> int | None:
        """The recorded pid while its group is still ours, else None."""
        try:
            rec = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return None
        pid = rec["pid"]
        now = start_time(pid)
        if now is not None and now != rec["start"]:
            return None  # the pid now belongs to another program
        return pid if group_members(pid) else None

    def alive(self) -> bool:
        return self.pid() is not None

    def signal(self, sig: int) -> None:
        pid = self.pid()
        if pid is not None:
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                pass

    def forget(self) -> None:
        self.record.unlink(missing_ok=True)

    def wait(self, ready: Callable[[], bool], timeout: float, what: str = "") -> None:
        """Until `ready()`; raises ServiceFailed naming the service, early if its process died."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self.record.exists() and not self.alive():
                raise ServiceFailed(f"{self.name} exited before it {what or 'came up'}; "
                                    f"last lines of {self.log}:\n{tail(self.log)}")
            if time.monotonic() > deadline:
                raise ServiceFailed(f"{self.name} did not {what or 'come up'} within {timeout:.0f} s; "
                                    f"last lines of {self.log}:\n{tail(self.log)}")
            time.sleep(0.25)


def stop_all(services: list[Service], sig: int = signal.SIGTERM, grace: float = 10) -> None:
    """Signal every live group, wait up to `grace` seconds, SIGKILL what is left, forget them."""
    for s in services:
        s.signal(sig)
    deadline = time.monotonic() + grace
    while any(s.alive() for s in services) and time.monotonic() < deadline:
        time.sleep(0.1)
    for s in services:
        s.signal(signal.SIGKILL)
    deadline = time.monotonic() + 10  # SIGKILL is not refused: only the kernel's reaping is waited for
    while any(s.alive() for s in services) and time.monotonic() < deadline:
        time.sleep(0.05)
    stuck = [s.name for s in services if s.alive()]
    if stuck:
        raise ServiceFailed(f"still running after SIGKILL: {', '.join(stuck)} (records kept in run/)")
    for s in services:
        s.forget()


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def http_answers(url: str) -> Callable[[], bool]:
    """Any HTTP answer (even 401/404) means the server is up."""
    import urllib.error
    import urllib.request

    def check() -> bool:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
    return check


def run_step(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None,
             timeout: float = 600) -> None:
    """A one-shot step (db sync, catalog…); raises ServiceFailed naming it with its log's tail."""
    with open(log, "ab") as out:
        r = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           env={**os.environ, **(env or {})}, timeout=timeout)
    if r.returncode:
        raise ServiceFailed(f"{name} failed (exit {r.returncode}); last lines of {log}:\n{tail(log)}")
