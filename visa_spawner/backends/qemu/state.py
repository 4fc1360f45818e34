"""What the qemu backend saves (in the hub and in `<instance>/state.json`) to find a VM again."""
from __future__ import annotations

from dataclasses import dataclass

from visa_spawner.backends.base import SavedState


@dataclass(frozen=True)
class QemuState(SavedState):
    """The VM's directory name, its QEMU pid (checked against its overlay: pids get reused), the
    forwarded port and how it booted (the snapshot it came from keeps that snapshot from pruning);
    `instrument_address`: its 127.77.x.y identity at the instrument gateway ("" without one)."""

    backend: str = "qemu"
    owner: str = ""
    server_name: str = ""
    vm: str = ""
    pid: int = 0
    port: int = 0
    overlay: str = ""
    qmp: str = ""
    accel: str = ""
    warm: bool = False
    image: str = ""
    started: float = 0.0
    snapshot: str = ""
    instrument_address: str = ""
