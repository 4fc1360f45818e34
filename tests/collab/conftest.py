"""Collaboration fixtures: an instance environment with this checkout's visa_instance and
jupyter-collaboration, a hub with the collaboration service, people, a shared instance."""
from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.collab.helpers import Person
from tests.hubtools import DEMO_CONFIG, Hub, make_demo_data, make_state_dir
from tests.support import free_port

COLLAB_CONFIG = Path(__file__).resolve().parent / "hub_config.py"
# The instance environment scripts/setup.sh builds (`make test` runs it first).
INSTANCE_ENV = Path(os.environ.get("VISA_INSTANCE_ENV", "/opt/visahub/instance-env"))


@pytest.fixture(scope="session")
def instance_env() -> Path:
    env = INSTANCE_ENV
    out = subprocess.run([str(env / "bin" / "python"), "-c",
                          "import visa_instance.room, jupyter_collaboration, jupyter_server_ydoc; print('ok')"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "ok", f"instance environment {env} is broken: {out.stderr[-2000:]}"
    return env


@pytest.fixture(scope="session")
def collab_state() -> Iterator[Path]:
    state = make_state_dir("visahub-collab-test-")
    make_demo_data(DEMO_CONFIG.parent / "catalogue.yaml", state / "data")
    yield state
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def collab_hub(collab_state: Path, instance_env: Path) -> Iterator[Hub]:
    hub = Hub(collab_state, config=COLLAB_CONFIG, extra_env={
        "VISA_INSTANCE_ENV": str(instance_env), "VISA_COLLAB_PORT": str(free_port()),
        "VISA_COLLAB_RECONCILE_INTERVAL": "2",
        "VISA_DEMO_INSTRUMENTS": "D11",  # the members' instrument tabs reach a real IOC (0.3 % of a core idle)
    }).start()
    try:
        yield hub
    finally:
        try:
            hub.stop_all_servers()
        finally:
            hub.stop()


@pytest.fixture(scope="session")
def person(collab_hub: Hub):
    """person("bob") → a logged-in Person (browser-like session: hub, service, instances)."""
    people: dict[str, Person] = {}

    def _person(name: str) -> Person:
        if name not in people:
            people[name] = Person(collab_hub, name)
        return people[name]

    return _person
