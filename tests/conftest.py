"""Session fixtures: one real demo hub (npm proxy, SQLite, demo catalogue, sandbox backend).

Markers name what a test needs (setup.cfg): openstack, qemu, postgres, root, browser. A test using one
of the fixtures in FIXTURE_REQUIRES gets that marker here; every test with none of them is `fast`."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hubtools import Hub, demo_state, login_factory

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
REQUIREMENTS = ("openstack", "qemu", "postgres", "root", "browser")
# fixtures that start processes: a test using one (even indirectly) needs what they need
FIXTURE_REQUIRES = {"hub": "root", "collab_hub": "root", "jupyter_server": "root", "oidc": "root",
                    "postgres": "postgres"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, marker in FIXTURE_REQUIRES.items():
            if fixture in getattr(item, "fixturenames", ()) and item.get_closest_marker(marker) is None:
                item.add_marker(marker)
        if not any(item.get_closest_marker(m) for m in REQUIREMENTS):
            item.add_marker("fast")


@pytest.fixture(scope="session")
def hub_state() -> Iterator[Path]:
    yield from demo_state()


@pytest.fixture(scope="session")
def hub(hub_state: Path) -> Iterator[Hub]:
    hub = Hub(hub_state).start()
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture(scope="session")
def login(hub: Hub):
    return login_factory(hub)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(autouse=True)
def _delete_instances_after_test(request):
    """Each hub test starts from no instance, whatever the previous one left (even on failure)."""
    yield
    if "hub" not in request.fixturenames:
        return
    hub: Hub = request.getfixturevalue("hub")
    if not hub.proc or hub.proc.poll() is not None:
        hub.start()
    for u in hub.api("GET", "/users?include_stopped_servers=1").json():
        for name in u.get("servers", {}):
            if name:
                hub.delete_server(u["name"], name)
