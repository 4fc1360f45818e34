"""Collaboration fixtures: an instance environment with this checkout's visa_instance and
jupyter-collaboration, a hub with the collaboration service, people, a shared instance."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.collab.helpers import Person
from tests.hubtools import DEMO_CONFIG, REPO, Hub, free_port, make_demo_data, make_state_dir

COLLAB_CONFIG = Path(__file__).resolve().parent / "hub_config.py"
# Our own instance environment: the shared one (/opt/visahub/instance-env) is rebuilt by
# scripts/setup.sh from requirements-instance.txt, which other work may be using right now.
INSTANCE_ENV = Path(os.environ.get("VISA_COLLAB_INSTANCE_ENV", "/opt/visahub/instance-env-collab"))
EXTRA_REQUIREMENTS = ["jupyter-collaboration==5.0.*"]


def _source_hash() -> str:
    h = hashlib.sha256()
    files = [REPO / "requirements-instance.txt", REPO / "setup.cfg"]
    files += sorted(p for p in (REPO / "visa_instance").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for p in files:
        h.update(str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes())
    h.update(" ".join(EXTRA_REQUIREMENTS).encode())
    return h.hexdigest()[:16]


def ensure_instance_env() -> Path:
    """Build (once) and refresh (when visa_instance changes) the instance environment."""
    stamp = INSTANCE_ENV / ".visa-src"
    want = _source_hash()
    if stamp.exists() and stamp.read_text().strip() == want:
        return INSTANCE_ENV
    pip = [str(INSTANCE_ENV / "bin" / "pip"), "-q", "--disable-pip-version-check"]
    if not (INSTANCE_ENV / "bin" / "python").exists():
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(INSTANCE_ENV)], check=True)
    subprocess.run(pip + ["install", "-r", str(REPO / "requirements-instance.txt"), *EXTRA_REQUIREMENTS],
                   check=True, capture_output=True)
    # install from a copy: building in the checkout would write build/ under other people's feet
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("setup.cfg", "pyproject.toml", "README.md"):
            shutil.copy(REPO / name, src / name)
        for pkg in ("visa_instance", "visa_spawner", "visa_authenticator", "visa_collab"):
            shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run(pip + ["install", "--no-deps", "--force-reinstall", str(src)], check=True, capture_output=True)
    subprocess.run(["chmod", "-R", "a+rX", str(INSTANCE_ENV)], check=True)
    stamp.write_text(want)
    return INSTANCE_ENV


@pytest.fixture(scope="session")
def instance_env() -> Path:
    env = ensure_instance_env()
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
