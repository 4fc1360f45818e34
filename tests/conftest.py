"""Session fixtures: one real demo hub (npm proxy, SQLite, demo catalogue, sandbox backend).

Markers name what a test needs (setup.cfg): openstack, qemu, postgres, root, browser. A test using one
of the fixtures in FIXTURE_REQUIRES gets that marker here; every test with none of them is `fast`."""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from tests.authenticator.services import PostgresCluster
from tests.hubtools import Hub, demo_state, login_factory

pytest_plugins = ["tests.fixture_timing", "pytester"]  # slow fixture teardowns named in the summary

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
    # the session's hub runs the demo's instruments (IOCs and gateway), as `make demo` does
    hub = Hub(hub_state, extra_env={"VISA_DEMO_INSTRUMENTS": "D11,IN5"}).start()
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


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One throw-away PostgreSQL cluster (Debian's package) for the whole session."""
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


_databases = itertools.count()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def new_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Engine]]:
    """new_engine() → an engine (visa_collab.db.connect, as both services make theirs) on a new,
    empty database of the kind under test: SQLite, and PostgreSQL where the test claims it."""
    from visa_collab.db import connect

    engines: list[Engine] = []

    def make() -> Engine:
        n = next(_databases)
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / f'db{n}.sqlite'}"
        else:
            url = request.getfixturevalue("postgres").create_database(f"visa_test_{n}")
        engines.append(connect(url))
        return engines[-1]

    yield make
    for engine in engines:
        engine.dispose()
