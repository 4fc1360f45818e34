"""The small protocol every backend implements.

`VisaSpawner` owns the lifecycle (options, progress, errors, hub state); a backend only knows how
to create, find, stop and delete one instance on its kind of infrastructure. Backends keep what
they need to find an instance again in a JSON-able `state` dict that the hub persists.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable

from traitlets.config import LoggingConfigurable

#: progress callback: (percent, message) -> None
ProgressCallback = Callable[[int, str], None]


class BackendError(Exception):
    """A failure a person can understand: shown in the progress bar, never a traceback.

    `reason` is a short label for metrics (as in JupyterHub's SpawnException).
    """

    def __init__(self, message: str, *, reason: str = "backend", log_detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.log_detail = log_detail


class InstanceStatus(enum.Enum):
    """What a backend can say about an instance it created."""

    RUNNING = "running"
    STOPPED = "stopped"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Plan:
    """One entry of the plan catalogue: an image on a flavour, served by a backend."""

    id: str
    display_name: str
    backend: str
    cpus: float
    memory_mb: int
    image: str = "default"
    description: str = ""
    default: bool = False
    roles: tuple[str, ...] = ()  # empty: every facility role may use it


@dataclass(frozen=True)
class InstanceSpec:
    """Everything a backend needs to create one instance; built by the spawner."""

    owner: str  # JupyterHub user name
    server_name: str  # JupyterHub named-server slug
    instance_id: str  # deterministic, unique per (owner, server_name)
    display_name: str
    proposal: str
    plan: Plan
    command: tuple[str, ...]  # the single-user server command line, no shell
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    data_path: str = ""  # host directory of the proposal's data, mounted read-only; "" if none
    screen: str = "1280x720"
    keyboard: str = "us"
    proposal_title: str = ""  # free text from the catalogue: only ever a value, never code
    roles: tuple[str, ...] = ()  # the owner's facility roles (e.g. security groups by role)
    instruments: tuple[str, ...] = ()  # the proposal's instruments (e.g. instrument-control networks)


class Backend(LoggingConfigurable):
    """Base of all backends; subclasses implement these steps, all async."""

    async def create(self, spec: InstanceSpec, progress: ProgressCallback) -> dict:
        """Create and start the instance; return the state to persist.

        Must leave nothing behind if it raises.
        """
        raise NotImplementedError

    async def address(self, state: dict) -> tuple[str, int]:
        """Where the hub reaches the instance's single-user server."""
        raise NotImplementedError

    async def status(self, state: dict) -> InstanceStatus:
        """Is the instance described by `state` running?"""
        raise NotImplementedError

    async def stop(self, state: dict, now: bool = False) -> None:
        """Stop the instance's processes or machine; keep its persistent home."""
        raise NotImplementedError

    async def delete(self, state: dict) -> None:
        """Remove everything the instance owns (called after stop, on delete)."""
        raise NotImplementedError

    async def list_managed(self) -> list[dict]:
        """States of every instance this backend manages (for reconcilers and admins)."""
        raise NotImplementedError

