"""The project's real OpenStack lab (lab/openstack/labctl.py) for the tests: start, connect, prepare, clean.

Started once per test run by the session fixture (fresh state, ~55 s with the lab's venv already
built, ~35 s more to build it); VISA_OPENSTACK_LAB_REUSE=1 keeps a lab that already answers (for
quick local iterations).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import openstack
import requests

from visa_spawner.backends.openstack.cloud import list_servers
from visa_spawner.backends.openstack.model import LIST_PAGE

REPO = Path(__file__).resolve().parents[3]
LABCTL = REPO / "lab" / "openstack" / "labctl.py"
LAB_DIR = Path(os.environ.get("OPENSTACK_LAB_DIR", "/var/tmp/visahub-openstack-lab"))
LAB_VENV = os.environ.get("OPENSTACK_LAB_VENV", "/var/tmp/visahub-openstack-lab-venv")
CLOUDS = LAB_DIR / "clouds.yaml"
UPSTREAMS = {"identity": "http://127.0.0.1:5000", "compute": "http://127.0.0.1:8774",
             "image": "http://127.0.0.1:9292", "network": "http://127.0.0.1:9696"}
FLAVORS = {"visa.small": (1, 512), "visa.large": (2, 2048)}
IMAGE = "visa-analysis"


class LabFailed(RuntimeError):
    pass


def _env() -> dict:
    return {**os.environ, "OPENSTACK_LAB_DIR": str(LAB_DIR), "OPENSTACK_LAB_VENV": LAB_VENV}


def answering() -> bool:
    try:
        return requests.get(UPSTREAMS["compute"], timeout=2).status_code < 500 and CLOUDS.exists()
    except requests.RequestException:
        return False


def _labctl(command: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    with open(LAB_DIR / f"labctl-{command}.out", "wb") as out:
        return subprocess.run([sys.executable, str(LABCTL), command, *args], env=_env(), stdout=out,
                              stderr=subprocess.PIPE, timeout=timeout)


def up() -> bool:
    """Start the lab; returns whether this call started it (and so must stop it)."""
    if os.environ.get("VISA_OPENSTACK_LAB_REUSE") == "1" and answering():
        return False
    r = _labctl("up", "--fresh", timeout=900)
    if r.returncode:  # labctl names the service that failed and shows the tail of its log
        raise LabFailed(f"the OpenStack lab did not start (labctl exit {r.returncode}; progress in "
                        f"{LAB_DIR}/labctl-up.out):\n{r.stderr.decode(errors='replace')}")
    return True


def down() -> None:
    """Killed, not stopped politely (~9 s more): the run's lab state is thrown away."""
    _labctl("down", "--now", timeout=180)


def connect(cloud: str = "lab", **kw) -> openstack.connection.Connection:
    config = openstack.config.OpenStackConfig(config_files=[str(CLOUDS)])
    return openstack.connection.Connection(
        config=config.get_one(cloud=cloud, compute_api_version="2.90", **kw))


def prepare(admin) -> None:
    """Flavours and the (fake) analysis image, public, as a facility would have them."""
    for name, (vcpus, ram) in FLAVORS.items():
        if not admin.compute.find_flavor(name, ignore_missing=True):
            admin.compute.create_flavor(name=name, vcpus=vcpus, ram=ram, disk=1, is_public=True)
    if not admin.image.find_image(IMAGE, ignore_missing=True):
        admin.image.create_image(name=IMAGE, data=b"\0" * 1024, disk_format="raw", container_format="bare",
                                 visibility="public", wait=True)


def demo_project_id(admin) -> str:
    return admin.identity.find_project("demo").id


def set_instance_quota(admin, instances: int) -> None:
    """A real Nova quota on the demo project (-1 = unlimited)."""
    admin.compute.update_quota_set(demo_project_id(admin), instances=instances, cores=-1, ram=-1, force=True)


PAGE = LIST_PAGE  # servers per listing page (why: openstack_cloud.list_servers)


def servers_with_tag(admin, tag: str) -> list:
    return list_servers(admin, PAGE, all_projects=True, tags=tag)


def delete_all(admin, tag: str, timeout: float = 180) -> None:
    """Delete every server with `tag` and wait until they are gone (the loaded lab drops a
    request now and then: keep trying until the deadline)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            left = servers_with_tag(admin, tag)
            if not left:
                return
            for s in left:
                if s.status != "DELETED" and s.task_state != "deleting":
                    admin.compute.delete_server(s.id, ignore_missing=True)
        except openstack.exceptions.SDKException:
            pass
        time.sleep(0.5)
