"""The small protocol every backend implements.

`VisaSpawner` owns the lifecycle (options, progress, errors, hub state); a backend only knows how
to create, find, stop and delete one instance on its kind of infrastructure. Backends keep what
they need to find an instance again in a JSON-able `state` dict that the hub persists; each
backend reads and writes that dict through its own small `SavedState` dataclass (`<name>/state.py`).
"""
from __future__ import annotations

import contextlib
import enum
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Self

from traitlets import TraitError, Unicode, validate
from traitlets.config import SingletonConfigurable

from visa_spawner.backends.instrument_net import parse_gateway

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


class ArchiveNotSupported(BackendError):
    """This backend cannot archive an instance's home, so the instance is not deleted.

    Raised rather than deleting without a copy: an instance removed by a rule must never take
    its owner's files with it silently.
    """

    def __init__(self, backend: str) -> None:
        super().__init__(
            f"Instances on the {backend} backend cannot be archived yet, so this one was not deleted: "
            "an admin copies its data and deletes it by hand.", reason="archive-unsupported")


class StateError(ValueError):
    """A saved state this hub cannot read (a bug or a hand-edited database, never a person's fault)."""


class UnknownBackendError(LookupError):
    """An instance belongs to a backend this hub does not configure.

    Raised instead of guessing: handing a VM's state to another backend would "stop" or
    "delete" the wrong thing and leave the VM running.
    """


class SavedState:
    """`from_dict`/`to_dict` for the frozen dataclasses the hub persists as JSON.

    Keys a class does not know are ignored (the spawner's own, or a newer version's), so states
    saved by earlier versions load as they are; values are coerced to the type of the field's
    default, and fields without a default are required.
    """

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        values: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name not in data or data[f.name] is None:
                if f.default is MISSING:
                    raise StateError(f"{cls.__name__}: the saved state has no {f.name!r}")
                continue
            value = data[f.name]
            try:
                values[f.name] = value if f.default is MISSING else type(f.default)(value)
            except (TypeError, ValueError) as e:
                raise StateError(f"{cls.__name__}: {f.name}={value!r} is not a {type(f.default).__name__}") from e
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class InstanceIdentity(SavedState):
    """Which backend holds an instance and whose it is.

    Kept by the spawner after stop (JupyterHub calls `clear_state` then), so `delete_forever`
    still reaches the backend that owns the instance's disk or home.
    """

    backend: str
    owner: str
    server_name: str

    def __post_init__(self) -> None:
        if not self.backend or not self.owner:
            raise StateError(f"instance identity needs a backend and an owner, got {self!r}")


@contextlib.contextmanager
def private_partial(target: Path) -> Iterator[Path]:
    """A new 0600 file beside `target` to write an archive into; renamed to `target` when the
    block succeeds, removed when it fails (no half archive ever carries the final name)."""
    partial = target.with_name(target.name + ".partial")
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    try:
        yield partial
        os.chmod(partial, 0o600)  # a tool that rewrote the file (qemu-img) may have changed its mode
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


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
    gpus: int = 0  # GPUs the instance needs; offered only while the backend has that many free


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
    instrument_control: tuple[str, ...] = ()  # of those, where the proposal's control window is open now
    restore_from: str = ""  # an archive (made by `Backend.archive`) the new instance's home starts from
    materials: str = ""  # a host folder (a course's materials) copied into a fresh home; "" if none
    warm_pool: str = ""  # a warm pool's name (a course): adopt a pre-started instance from it if one is ready


class Backend(SingletonConfigurable):
    """Base of all backends; subclasses implement these steps, all async.

    A hub holds one instance of each backend class (`Backend.instance()`), shared by every
    spawner and by the OpenStack reconciler: one thread pool, one listing loop, one view of what
    is in flight.
    """

    instrument_gateway = Unicode(
        "", config=True,
        help="HOST:PORT of the instrument gateway's PVAccess TCP server as the hub's host reaches it "
        "(docs/instrument.md). Set: each sandbox and qemu instance gets its own 127.77.x.y source "
        "address (saved as `instrument_address`) and one route to the gateway, EPICS_PVA_NAME_SERVERS "
        "pointing at it; they need it on a loopback address. Empty: instances get no route to it.")

    @validate("instrument_gateway")
    def _check_gateway(self, proposal: dict) -> str:
        value = proposal["value"].strip()
        if value:
            try:
                parse_gateway(value)
            except ValueError as e:
                raise TraitError(str(e)) from None
        return value

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._instance = None  # one shared instance per backend class, not one for all backends

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

    async def capacity(self) -> dict:
        """What this backend can still take, for the admins' dashboard and for GPU plans
        (`GET /hub/api/visa/capacity`): a JSON-able dict that always has `gpus_free` (int).

        Must not block the event loop (SDK calls and file reads in an executor).
        """
        return {"gpus_free": 0}

    #: file name extension of this backend's archives ("" when it cannot archive)
    archive_extension = ""

    async def archive(self, state: dict, dest: Path) -> Path | None:
        """Write a compressed copy of the instance's persistent data (home or disk) to `dest`
        plus `archive_extension`, mode 0600, and return that path (None: the instance never had
        any); called on a stopped instance before `delete`.

        Must not block the event loop, and must leave no partial file behind if it raises.
        """
        raise ArchiveNotSupported(type(self).__name__.removesuffix("Backend").lower() or "this")

