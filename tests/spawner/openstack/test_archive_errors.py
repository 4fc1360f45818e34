"""OpenStack archives when the cloud fails (fast: a scripted cloud in place of the SDK): a snapshot
that ends in error or never becomes active deletes its image, writes no sidecar and raises, so the
instance is kept (VisaSpawner.delete_forever deletes nothing after a BackendError)."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from traitlets.config import Config

from visa_spawner.archives import archive_instance, can_archive
from visa_spawner.backends.base import BackendError
from visa_spawner.backends.openstack.backend import OpenStackBackend
from visa_spawner.spawner import BACKEND_CLASSES


class ScriptedCloud:
    """The few SDK calls an archive makes; the image's statuses follow `statuses` (the last repeats)."""

    def __init__(self, statuses: list[str], server_status: str = "ACTIVE") -> None:
        self.statuses, self.calls = list(statuses), []
        self.server = SimpleNamespace(id="srv-1", status=server_status, task_state=None)
        self.compute = SimpleNamespace(servers=self._servers, create_server_image=self._snapshot,
                                       delete_server=lambda *a, **k: self.calls.append("delete_server"))
        self.image = SimpleNamespace(get_image=self._image, delete_image=self._delete_image)

    def _servers(self, **query):
        return [self.server]

    def _snapshot(self, server_id, name, metadata):
        self.calls.append(("snapshot", server_id, name))
        return SimpleNamespace(id="img-1", status="queued")

    def _image(self, image_id):
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return SimpleNamespace(id=image_id, status=status, size=42, disk_format="raw")

    def _delete_image(self, image_id, ignore_missing=True):
        self.calls.append(("delete_image", image_id))


class DirectCalls:
    """CloudCalls' interface, running each step at once against the scripted cloud."""

    def __init__(self, cloud: ScriptedCloud) -> None:
        self.cloud = cloud

    async def call(self, fn, *args, doing: str, attempts: int | None = None):
        return fn(self.cloud, *args)

    async def once(self, fn, *args):
        return fn(self.cloud, *args)


def backend_on(cloud: ScriptedCloud, **traits) -> OpenStackBackend:
    c = Config()
    c.OpenStackBackend.update({"hub_id": "t", **traits})
    backend = OpenStackBackend(config=c, log=logging.getLogger("test"))
    backend.cloud_calls = DirectCalls(cloud)
    return backend


STATE = {"backend": "openstack", "owner": "alice", "server_name": "vm", "server_id": "srv-1", "name": "visa-t-x"}


async def archive(backend, tmp_path):
    return await archive_instance(backend, STATE, archive_dir=str(tmp_path), owner="alice", server="vm",
                                  display_name="VM", options={}, backend_name="openstack")


@pytest.mark.parametrize("failed", ["killed", "deleted"])
async def test_a_snapshot_in_error_deletes_its_image_and_keeps_the_instance(tmp_path, failed):
    cloud = ScriptedCloud(["queued", "saving", failed])
    with pytest.raises(BackendError, match=f"could not snapshot the server \\(image {failed}\\), so it was not"):
        await archive(backend_on(cloud), tmp_path)
    assert ("delete_image", "img-1") in cloud.calls and "delete_server" not in cloud.calls
    assert not list(tmp_path.rglob("*.json"))


async def test_a_snapshot_that_never_becomes_active_times_out_and_keeps_the_instance(tmp_path):
    cloud = ScriptedCloud(["saving"])
    with pytest.raises(BackendError, match="did not finish the server's snapshot within 0.3 s") as e:
        await archive(backend_on(cloud, archive_timeout=0.3), tmp_path)
    assert e.value.reason == "archive-timeout"
    assert ("delete_image", "img-1") in cloud.calls and "delete_server" not in cloud.calls
    assert not list(tmp_path.rglob("*.json"))


async def test_an_active_snapshot_is_recorded_with_glance_s_size(tmp_path):
    cloud = ScriptedCloud(["queued", "active"])
    made = await archive(backend_on(cloud), tmp_path)
    assert (made.image_id, made.size, made.file) == ("img-1", 42, f"{made.id}.raw")
    assert ("snapshot", "srv-1", f"visa-archive-{made.id}") in cloud.calls
    assert not any(c[0] == "delete_image" for c in cloud.calls if isinstance(c, tuple))


async def test_a_server_in_error_is_not_snapshotted(tmp_path):
    cloud = ScriptedCloud(["active"], server_status="ERROR")
    with pytest.raises(BackendError, match="state ERROR"):
        await archive(backend_on(cloud), tmp_path)
    assert not any(isinstance(c, tuple) and c[0] == "snapshot" for c in cloud.calls)


def test_rules_delete_openstack_instances_only_when_a_stop_keeps_the_disk():
    shelve, delete = Config(), Config()
    shelve.OpenStackBackend.stop_action = "shelve"
    delete.OpenStackBackend.stop_action = "delete"
    assert can_archive("openstack", BACKEND_CLASSES, shelve)
    assert not can_archive("openstack", BACKEND_CLASSES, delete) and not can_archive("openstack", BACKEND_CLASSES)
