"""What the OpenStack backend saves to find an instance's Nova server again."""
from __future__ import annotations

from dataclasses import dataclass

from visa_spawner.backends.base import SavedState


@dataclass(frozen=True)
class OpenStackState(SavedState):
    """The server's id and deterministic name (the name alone finds it after a lost id), and
    where the hub reaches Jupyter in it; `instrument_address`: its fixed IP, which the instrument
    gateway knows it by (Neutron port security keeps it from using another)."""

    backend: str = "openstack"
    owner: str = ""
    server_name: str = ""
    server_id: str = ""
    name: str = ""
    address: str = ""
    port: int = 0
    instrument_address: str = ""
