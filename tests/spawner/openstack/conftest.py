"""Fixtures of the OpenStack backend tests: the real lab (once per run), an admin connection,
the fault-injecting proxy, and the boot emulator. No __init__.py here on purpose: should pytest
ever put tests/spawner on sys.path, a package named `openstack` would shadow openstacksdk; the
helpers are imported as tests.spawner.openstack.* (setup.cfg: pythonpath = .)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.spawner.openstack import lab
from tests.spawner.openstack.fault_proxy import FaultProxy


@pytest.fixture(scope="session")
def openstack_lab() -> Iterator[Path]:
    started = lab.up()
    admin = lab.connect("lab")
    lab.prepare(admin)
    lab.set_instance_quota(admin, -1)
    try:
        yield lab.LAB_DIR
    finally:
        if started:
            lab.down()


@pytest.fixture(scope="session")
def lab_admin(openstack_lab):
    return lab.connect("lab")


@pytest.fixture(scope="session")
def fault_proxy(openstack_lab) -> Iterator[FaultProxy]:
    proxy = FaultProxy(lab.UPSTREAMS).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def faults(fault_proxy):
    """The proxy's faults, switched off again after the test whatever happens."""
    fault_proxy.faults.off()
    yield fault_proxy.faults
    fault_proxy.faults.off()
