"""Where one VM lives on the hub's host: its deterministic name, its files, its saved state.

Split from the backend so the tests and the archive code that find a VM's files need no backend.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from visa_spawner.backends.base import StateError
from visa_spawner.backends.guest import cloudinit
from visa_spawner.backends.qemu.state import QemuState


def vm_name(owner: str, server_name: str) -> str:
    """Deterministic per (owner, server): a restarted hub, and `delete`, find the same files."""
    return "vm-" + hashlib.sha256(json.dumps([owner, server_name]).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class VmPaths:
    """The files of one instance under `<state_dir>/instances/<vm>/` (0700, root's only)."""

    dir: Path

    overlay = property(lambda self: self.dir / "disk.qcow2")
    qmp = property(lambda self: self.dir / "qmp.sock")
    agent = property(lambda self: self.dir / "agent.sock")
    console = property(lambda self: self.dir / "console.log")
    log = property(lambda self: self.dir / "qemu.log")
    state = property(lambda self: self.dir / "state.json")
    seed = property(lambda self: self.dir / "nocloud")  # config_delivery = "nocloud"

    def fw_cfg(self) -> list[tuple[str, Path]]:
        """(fw_cfg name, file) of the instance config and start script (the config holds the token)."""
        return [(name, self.dir / ("fwcfg-" + name.rsplit("/", 1)[1])) for name in cloudinit.fw_cfg_files({})]


def write_state(paths: VmPaths, state: dict) -> None:
    paths.state.write_text(json.dumps(state))


def read_state(paths: VmPaths) -> dict | None:
    try:
        return json.loads(paths.state.read_text())
    except (OSError, ValueError):
        return None


def vm_of(state: QemuState) -> str:
    """The VM's directory name: saved, or derived from (owner, server) after the hub cleared its state."""
    if state.vm:
        return state.vm
    if not state.owner:
        raise StateError("QemuState: neither a VM name nor an owner to find the VM by")
    return vm_name(state.owner, state.server_name)


def hostname(server_name: str) -> str:
    return (re.sub(r"[^a-z0-9-]+", "-", server_name.lower()).strip("-")[:63] or "visa").strip("-") or "visa"
