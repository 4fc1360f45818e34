"""OpenStack archives against the real lab: a Nova snapshot (the lab's driver uploads a disk to
Glance as a hypervisor does), its sidecar, the streamed download, the restore, the prune."""
from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from tests.spawner.openstack.support import Progress, make_backend, spec
from tests.spawner.openstack.test_backend import standin_cloud  # noqa: F401 - the fixture
from visa_spawner.archives import archive_instance, find_archive, restore_source

pytestmark = [pytest.mark.openstack, pytest.mark.asyncio(loop_scope="session")]


async def test_snapshot_archive_download_restore_prune(standin_cloud, lab_admin, tmp_path):  # noqa: F811
    backend = make_backend(standin_cloud[0])
    first = spec(proposal="P-1")
    state = await backend.create(first, Progress())
    archive = await archive_instance(backend, state, archive_dir=str(tmp_path), owner="alice",
                                     server=first.server_name, display_name="My VM",
                                     options={"proposal": "P-1", "plan": "openstack-small"}, backend_name="openstack")
    await backend.delete(state)  # what delete_forever does next
    # the archive: an active snapshot image of that server, named by the sidecar; no local file
    image = await asyncio.to_thread(lab_admin.image.get_image, archive.image_id)
    assert image.status == "active" and image.name == archive.image_name == f"visa-archive-{archive.id}"
    assert archive.size == image.size > 3 << 20 and archive.file == f"{archive.id}.raw"
    assert image.properties["visa-archive"] == f"alice/{archive.id}"
    sidecar = json.loads((tmp_path / "alice" / f"{archive.id}.json").read_text())
    assert sidecar["image_id"] == image.id and sidecar["backend"] == "openstack"
    assert sorted(p.name for p in (tmp_path / "alice").iterdir()) == [f"{archive.id}.json"]
    assert find_archive(tmp_path, "alice", archive.id) == archive and archive.restorable

    # the download: Glance's bytes in chunks of at most 1 MiB, the disk of the archived server
    chunks = [c async for c in backend.archive_chunks(archive.image_id)]
    data = b"".join(chunks)
    assert len(chunks) > 3 and max(map(len, chunks)) <= 1 << 20 and len(data) == archive.size
    assert hashlib.sha512(data).hexdigest() == image.hash_value
    assert data.startswith(f"VISA lab disk of server {state['server_id']}".encode())

    # the restore: a new server booted from the snapshot, not from the plan's image
    again = spec(proposal="P-1", restore_from=restore_source(tmp_path, archive))
    assert again.restore_from == f"glance:{image.id}"
    restored = await backend.create(again, Progress())
    server = await asyncio.to_thread(lab_admin.compute.get_server, restored["server_id"])
    assert server.image["id"] == image.id
    await backend.delete(restored)

    # the prune: the image goes
    await backend.delete_archive(archive.image_id)
    assert await asyncio.to_thread(lab_admin.image.find_image, image.id, ignore_missing=True) is None
    await backend.delete_archive(archive.image_id)  # gone already: done


async def test_no_server_left_means_nothing_to_archive(standin_cloud, tmp_path):  # noqa: F811
    backend = make_backend(standin_cloud[0])
    first = spec()
    state = await backend.create(first, Progress())
    await backend.stop(state)  # stop_action "delete": the server and its disk are gone
    assert await archive_instance(backend, state, archive_dir=str(tmp_path), owner="alice",
                                  server=first.server_name, display_name="x", options={},
                                  backend_name="openstack") is None
