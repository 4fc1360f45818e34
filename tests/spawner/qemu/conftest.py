"""A real hub whose plans include the qemu backend ("Virtual machine"), and host-side probes.

The hub, hub_state and login fixtures override those of tests/conftest.py for tests in this
directory only (so the shared autouse clean-up applies to VMs too). This hub has its own state
dir: session fixtures live until the session ends, so it runs beside the root hub, never on its
database.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hubtools import Browserless, Hub, demo_state, login_factory
from visa_spawner.backends.qemu.image import DEFAULT_IMAGE_DIR, availability

QEMU_CONFIG = Path(__file__).resolve().parent / "hub_qemu_config.py"
IMAGE_DIR = os.environ.get("VISA_QEMU_IMAGE_DIR", DEFAULT_IMAGE_DIR)
PROPOSAL = "P-2026-011"  # alice is its PI, bob a co-proposer


def pinned_image_dir(image_dir: str, under: Path) -> str:
    """An image dir whose `current` is the build that is current now: `make image` may switch
    `current` while tests run, and a warm start only restores a snapshot of the same build."""
    ok, why = availability(image_dir)
    assert ok, f"the qemu tests boot the analysis image: {why}"
    pinned = under / "image"
    pinned.mkdir(exist_ok=True)
    (pinned / "current").unlink(missing_ok=True)
    (pinned / "current").symlink_to((Path(image_dir) / "current").resolve())
    return str(pinned)


@pytest.fixture(scope="session")
def hub_state() -> Iterator[Path]:
    yield from demo_state()


@pytest.fixture(scope="session")
def login(hub: Hub):
    return login_factory(hub)


@pytest.fixture(scope="session")
def image_dir(hub_state: Path) -> str:
    return pinned_image_dir(IMAGE_DIR, hub_state)


def start_qemu_hub(hub_state: Path, image_dir: str, config: Path = QEMU_CONFIG, **extra_env: str) -> Iterator[Hub]:
    """The qemu test hub on `hub_state` (extra_env: e.g. VISA_DEMO_INSTRUMENTS); no VM outlives it."""
    hub = Hub(hub_state, config=config, extra_env={"VISA_QEMU_IMAGE_DIR": image_dir, **extra_env})
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()
        for pid in qemu_pids(hub_state):  # a failed test must not leave VMs running on the host
            os.kill(pid, 9)


@pytest.fixture(scope="session")
def hub(hub_state: Path, image_dir: str) -> Iterator[Hub]:
    yield from start_qemu_hub(hub_state, image_dir, VISA_QEMU_WARM="1")


@pytest.fixture(scope="session")
def qemu_state(hub_state: Path) -> Path:
    return hub_state / "qemu"


def qemu_pids(under: Path) -> list[int]:
    """QEMU processes whose command line mentions `under` (their overlay lives there)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"qemu-system" in argv[0] and str(under).encode() in b" ".join(argv):
            pids.append(int(cmdline.parent.name))
    return pids


def create_vm(client: Browserless, name: str, plan: str = "vm", proposal: str = PROPOSAL) -> str:
    r = client.new_instance(name=name, proposal=proposal, plan=plan, screen="1280x720", keyboard="fr")
    assert r.status_code == 302, r.text[:500]
    return r.headers["location"].rsplit("/", 1)[1]


def progress_messages(hub: Hub, user: str, server: str) -> list[str]:
    """The progress events of the server's last spawn, as the progress page shows them."""
    import json

    r = hub.api("GET", f"/users/{user}/servers/{server}/progress", stream=True)
    out = []
    for line in r.iter_lines(decode_unicode=True):
        if line and line.startswith("data:"):
            event = json.loads(line[5:])
            out.append(event.get("message", ""))
            if event.get("failed") or event.get("ready"):
                break
    return out
