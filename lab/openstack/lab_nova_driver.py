"""The lab's hypervisor: Nova's `fake.FakeDriver`, plus a snapshot that uploads a disk image.

Run by the lab venv's Python inside nova-compute (never imported by the hub or the tests). The
fake driver's `snapshot()` only sets the task state, so a snapshot image stays `queued` for ever;
a real hypervisor (libvirt) uploads the server's disk to Glance through Nova's image API and the
image becomes `active`. This driver does the same with a small raw disk of its own making, so the
OpenStack backend's archives (Nova snapshots) are tested against a real Nova and Glance: the
image goes queued → saving → active and its bytes are what Glance serves back.

    python lab_nova_driver.py --config-file nova.conf   # nova-compute, this driver importable

nova.conf names it `compute_driver = lab_nova_driver.SnapshotFakeDriver`: Nova loads drivers
only as `nova.virt.<name>`, so the launcher adds this folder to `nova.virt`'s search path.
"""
from __future__ import annotations

import importlib
import io
import os
import sys

#: the disk a snapshot uploads: several of a downloader's chunks, small enough to keep the lab fast
DISK_SIZE = 3 * (1 << 20) + 12345


def disk_image(instance_uuid: str) -> bytes:
    """A raw 'disk' that names its server, so a test can tell whose snapshot it downloaded."""
    line = f"VISA lab disk of server {instance_uuid}\n".encode()
    return (line * (DISK_SIZE // len(line) + 1))[:DISK_SIZE]


def _driver_class():
    from nova import exception
    from nova.compute import task_states
    from nova.image import glance
    from nova.virt import fake

    class SnapshotFakeDriver(fake.FakeDriver):
        """FakeDriver whose snapshot uploads a raw disk, as libvirt's does (metadata, then data)."""

        def snapshot(self, context, instance, image_id, update_task_state):
            if instance.uuid not in self.instances:
                raise exception.InstanceNotRunning(instance_id=instance.uuid)
            update_task_state(task_state=task_states.IMAGE_PENDING_UPLOAD)
            update_task_state(task_state=task_states.IMAGE_UPLOADING,
                              expected_state=task_states.IMAGE_PENDING_UPLOAD)
            metadata = {"disk_format": "raw", "container_format": "bare",
                        "properties": {"image_location": "snapshot", "image_state": "available",
                                       "owner_id": instance.project_id}}
            glance.API().update(context, image_id, metadata, io.BytesIO(disk_image(instance.uuid)),
                                purge_props=False)

    return SnapshotFakeDriver


def __getattr__(name: str):
    if name == "SnapshotFakeDriver":  # nova imports this module as nova.virt.lab_nova_driver
        return _driver_class()
    raise AttributeError(name)


def main() -> int:
    """nova-compute, with this folder on `nova.virt`'s path (log and program name unchanged)."""
    from nova.cmd import compute  # first: nova.cmd monkey-patches with eventlet

    importlib.import_module("nova.virt").__path__.append(os.path.dirname(os.path.abspath(__file__)))
    sys.argv[0] = os.path.join(os.path.dirname(sys.executable), "nova-compute")
    return compute.main()


if __name__ == "__main__":
    sys.exit(main())
