"""OpenStack archives: a Nova snapshot of the server, kept in Glance, never copied to the hub.

Why a snapshot: the server's disk (home included) lives in the cloud; copying it to the hub's disk
would move gigabytes through the hub for every deletion. Nova's `createImage` makes the hypervisor
upload the disk to Glance; the image (status `active`, its size from Glance) is the archive, and
the hub keeps only the sidecar naming it (`visa_spawner.archives`). The owner downloads it streamed
from Glance in chunks, restores it by booting a new server from it, and the retention prune deletes
the image. Every SDK call runs in the backend's bounded pool (`cloud.CloudCalls`), never on the loop.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from openstack import exceptions as sdk_exc
from traitlets import Float
from traitlets.config import Config

from visa_spawner.archives import StoredImage
from visa_spawner.backends.base import Backend, BackendError, InstanceSpec
from visa_spawner.backends.openstack.cloud import CloudCalls, find_servers, get_server, poll_until
from visa_spawner.backends.openstack.errors import to_backend_error
from visa_spawner.backends.openstack.state import OpenStackState

#: Glance states an image never leaves for `active`
FAILED_IMAGE = {"killed", "deleted", "pending_delete", "deactivated"}
#: servers Nova cannot snapshot as they are (a shelved one is unshelved first)
UNSNAPSHOTTABLE = {"ERROR", "BUILD", "RESCUE"}
#: image property naming the archive (owner/id), so an admin finds an archive image's sidecar
ARCHIVE_PROPERTY = "visa-archive"
RESTORE_PREFIX = "glance:"  # InstanceSpec.restore_from of an OpenStack archive: glance:<image id>


def get_image(conn, image_id: str):
    try:
        return conn.image.get_image(image_id)
    except sdk_exc.NotFoundException:
        return None


def delete_image(conn, image_id: str) -> None:
    try:
        conn.image.delete_image(image_id, ignore_missing=True)
    except sdk_exc.NotFoundException:
        pass


class SnapshotArchives:
    """Make, read and delete the snapshot images that archive this hub's servers."""

    def __init__(self, calls: CloudCalls, *, tag: str, timeout: float, log: logging.Logger,
                 chunk_size: int = 1 << 20) -> None:
        self.calls, self.tag, self.timeout, self.log, self.chunk_size = calls, tag, timeout, log, chunk_size

    async def snapshot(self, name: str, archive: str, owner: str) -> StoredImage | None:
        """Snapshot the server called `name` into an image named after the archive; wait until
        Glance says `active`. None when no server is left (stop deleted it: nothing to archive).
        A failed or late snapshot deletes its image and raises, so the caller deletes nothing."""
        servers = [s for s in await self.calls.call(find_servers, name, self.tag, doing="finding the server to archive")
                   if s.status not in ("DELETED", "SOFT_DELETED")]
        if not servers:
            return None
        server = servers[0]
        if server.status.startswith("SHELVED"):
            await self._unshelve(server.id)
        elif server.status in UNSNAPSHOTTABLE:
            raise BackendError(f"The server is in state {server.status}: the cloud cannot snapshot it, so it was not "
                               "deleted; ask an admin.", reason="archive", log_detail=f"server {server.id}")
        image_name = f"visa-archive-{archive}"
        metadata = {ARCHIVE_PROPERTY: f"{owner}/{archive}"[:255], "visa-hub-tag": self.tag}
        # a POST, not retried: a second one would make a second image
        try:
            image = await self.calls.once(lambda c: c.compute.create_server_image(server.id, image_name, metadata))
        except Exception as e:
            raise to_backend_error(e, "snapshotting the server to archive it") from None
        self.log.info("Archive %s: snapshot image %s of server %s requested", archive, image.id, server.id)
        try:
            return await self._wait_active(image.id, image_name)
        except BaseException:
            await asyncio.shield(self.delete(image.id, quiet=True))
            raise

    async def _unshelve(self, server_id: str) -> None:
        """A shelved server's disk is only in its shelve image, which Nova cannot snapshot and deletes
        with the server: bring the server back first (its boot leaves Jupyter stopped: no start waits)."""
        await self.calls.call(lambda c: c.compute.unshelve_server(server_id), doing="unshelving to archive")

        async def active() -> bool:
            server = await self.calls.call(get_server, server_id, doing="following the unshelve")
            if server is None or server.status == "ERROR":
                raise BackendError("The shelved server could not be brought back to archive it, so it was not "
                                   "deleted; ask an admin.", reason="archive", log_detail=f"server {server_id}")
            return server.status == "ACTIVE" and not server.task_state

        if not await poll_until(active, timeout=self.timeout, first=0.5, longest=5.0):
            raise BackendError(f"The cloud did not unshelve the server within {self.timeout:g} s to archive it, so it "
                               "was not deleted; ask an admin.", reason="archive-timeout")

    async def _wait_active(self, image_id: str, image_name: str) -> StoredImage:
        deadline = time.monotonic() + self.timeout
        last = ""

        async def settled():
            nonlocal last
            image = await self.calls.call(get_image, image_id, doing="following the snapshot")
            last = image.status if image is not None else "deleted"
            if last in FAILED_IMAGE:
                raise BackendError(f"The cloud could not snapshot the server (image {last}), so it was not deleted; "
                                   "ask an admin.", reason="archive", log_detail=f"image {image_id} {last}")
            return image if last == "active" else None

        image = await poll_until(settled, timeout=max(0.0, deadline - time.monotonic()), first=0.5, longest=5.0)
        if image is None:
            raise BackendError(f"The cloud did not finish the server's snapshot within {self.timeout:g} s, so it was "
                               "not deleted; ask an admin.", reason="archive-timeout",
                               log_detail=f"image {image_id} still {last}")
        return StoredImage(image_id=image.id, image_name=image_name, size=int(image.size or 0),
                           extension=f".{image.disk_format or 'img'}")

    async def chunks(self, image_id: str) -> AsyncIterator[bytes]:
        """The image's bytes from Glance, `chunk_size` at a time: each read in the pool, never the
        whole image in memory."""
        response = await self.calls.call(
            lambda c: c.image.download_image(image_id, stream=True, chunk_size=self.chunk_size),
            doing="downloading the archive")
        reader: Any = response.iter_content(self.chunk_size)
        try:
            while chunk := await self.calls.once(lambda c: next(reader, b"")):
                yield chunk
        finally:
            await self.calls.once(lambda c: response.close())

    async def delete(self, image_id: str, *, quiet: bool = False) -> None:
        """Delete an archive's image (gone already: done)."""
        try:
            await self.calls.call(delete_image, image_id, doing="deleting the archive's image")
        except BackendError as e:
            if not quiet:
                raise
            self.log.error("Snapshot image %s may be left behind: %s %s", image_id, e.message, e.log_detail)


class SnapshotArchiving(Backend):
    """The OpenStack backend's archive steps (`Backend.archive`, the download's chunks, the prune,
    the restore's image), on the backend's pool and tag."""

    archive_timeout = Float(1800, config=True, help="Seconds for the cloud to snapshot a server being archived "
                            "(image `active`); later, the snapshot is deleted and the instance kept.")

    @property
    def snapshots(self) -> SnapshotArchives:
        if getattr(self, "_snapshots", None) is None:
            self._snapshots = SnapshotArchives(self.cloud_calls, tag=self.tag, timeout=self.archive_timeout,
                                               log=self.log)
        return self._snapshots

    @classmethod
    def archives_before_delete(cls, config: Config | None) -> bool:
        """May lifecycle rules delete these instances? The hub stops a server before deleting it, and
        with `stop_action` "delete" that stop already deleted the server and its disk: only with
        "shelve" is there still a disk to archive (`archives.can_archive`)."""
        section = config.get(cls.__name__) if config is not None and cls.__name__ in config else {}
        return (section or {}).get("stop_action", cls.class_traits()["stop_action"].default_value) == "shelve"

    async def archive(self, state: dict, dest: Path) -> StoredImage | None:
        """A snapshot image of the instance's server (None: no server is left to archive)."""
        saved = OpenStackState.from_dict(state)
        return await self.snapshots.snapshot(self._name_of(saved), dest.name, saved.owner)

    def archive_chunks(self, image_id: str) -> AsyncIterator[bytes]:
        return self.snapshots.chunks(image_id)

    async def delete_archive(self, image_id: str) -> None:
        await self.snapshots.delete(image_id)

    async def boot_image(self, spec: InstanceSpec) -> str:
        """The image a new server boots: the archive's snapshot when restoring, else the plan's."""
        if not spec.restore_from.startswith(RESTORE_PREFIX):
            return await self._lookup("image", self.images.get(spec.plan.image, spec.plan.image))
        image_id = spec.restore_from.removeprefix(RESTORE_PREFIX)
        image = await self.cloud_calls.call(get_image, image_id, doing="looking up the archive's image")
        if image is None or image.status != "active":
            raise BackendError("The archived server's image is no longer in the facility cloud; it cannot be "
                               "restored.", reason="options", log_detail=f"image {image_id}")
        return image.id
