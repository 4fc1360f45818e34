"""The lab's own virtualenv, keyed on the content of requirements.lock.

Why a key: building the venv takes minutes and reusing it takes none, but a venv built from an
older lock must never be reused silently. The key (sha256 of the lock and the base Python's
version) is written into the venv only after every package installed, so a build that was
interrupted is never taken for a finished one.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOCK = HERE / "requirements.lock"
STAMP = "visahub-lab-lock.sha256"
INSTALLERS = ("pip", "setuptools", "wheel")  # pinned in the lock, installed before the rest
NEEDED = ("nova-manage", "keystone-manage", "neutron-db-manage", "glance-manage", "placement-manage", "gunicorn")


class VenvError(RuntimeError):
    """The venv could not be built; the message names the step and shows pip's last lines."""


def key(lock: Path = LOCK, python: str = sys.executable) -> str:
    """What the venv is built from: the lock's bytes and the base interpreter's version."""
    version = subprocess.run([python, "-c", "import sys; print(sys.version)"], capture_output=True,
                             text=True, check=True).stdout
    return hashlib.sha256(lock.read_bytes() + version.encode()).hexdigest()


def is_ready(venv: Path, want: str) -> bool:
    stamp = venv / STAMP
    return (stamp.is_file() and stamp.read_text().strip() == want
            and all((venv / "bin" / name).exists() for name in NEEDED))


def split_lock(lock: Path = LOCK) -> tuple[list[str], list[str]]:
    """(installer pins, other pins) from the lock, comments and blank lines dropped."""
    pins = [line.strip() for line in lock.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
    first = [p for p in pins if p.split("==")[0].lower() in INSTALLERS]
    return first, [p for p in pins if p not in first]


def _pip(venv: Path, args: list[str], log: Path, step: str) -> None:
    with open(log, "ab") as out:
        r = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", *args], stdout=out,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if r.returncode:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise VenvError(f"lab venv: {step} failed (pip exit {r.returncode}); log {log}:\n{tail}")


def ensure(venv: Path, log: Path, python: str = sys.executable) -> bool:
    """Make `venv` match the lock; returns whether it had to be built."""
    want = key(python=python)
    if is_ready(venv, want):
        return False
    if venv.exists():
        shutil.rmtree(venv)  # an older lock or an interrupted build: never patched in place
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    installers, pins = split_lock()
    _pip(venv, ["install", "-q", "--disable-pip-version-check", *installers], log, "installing pip/setuptools/wheel")
    _pip(venv, ["install", "-q", "--no-deps", "-r", str(LOCK)], log, "installing requirements.lock")
    _pip(venv, ["check"], log, "pip check (the lock misses a dependency)")
    (venv / STAMP).write_text(want + "\n")
    return True
