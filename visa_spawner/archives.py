"""Archived homes: what is left of an instance deleted for ever, and the home page's download.

`VisaSpawner.delete_forever` calls `archive_instance` before the backend deletes anything, so an
instance removed by a lifetime or inactivity rule never takes its owner's files with it silently.
On disk (the archive dir and each owner's directory are root's only, 0700; files 0600):

    <archive_dir>/<owner>/<server>-<UTC stamp><ext>    the backend's archive (.tar.gz, .qcow2)
    <archive_dir>/<owner>/<server>-<UTC stamp>.json    its sidecar (`Archive.sidecar`)

An OpenStack archive is a snapshot image kept by the cloud (`StoredImage`): no local file, its
sidecar names the image (`image_id`, `image_name`); `file` is then only the download's name.

A page or a form names an archive by its id (`<server>-<UTC stamp>`) under the signed-in
person's own directory, never by a path, so no request can reach another file. The ops sweep
prunes archives whose sidecar `created` is older than the retention.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from jupyterhub.apihandlers import APIHandler
from jupyterhub.handlers import BaseHandler
from jupyterhub.scopes import needs_scope
from tornado import web
from traitlets import import_item
from traitlets.config import Config

from .backends.base import Backend, BackendError

STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
#: an archive id: a server name made safe for a file name, then the UTC stamp of the archive
ARCHIVE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}-\d{8}T\d{6}Z")
#: backends whose archives can become the home (sandbox) or disk (qemu) of a new instance
RESTORABLE_BACKENDS = frozenset({"sandbox", "qemu", "openstack"})
MEDIA_TYPES = {".tar.gz": "application/gzip", ".qcow2": "application/octet-stream"}


@dataclass(frozen=True)
class StoredImage:
    """What `Backend.archive` returns for an archive the cloud keeps (a snapshot image)."""

    image_id: str
    image_name: str
    size: int  # bytes, as the image service reports it
    extension: str  # of the download's file name (".raw", ".qcow2")


@dataclass(frozen=True)
class Archive:
    """One archived instance, as its sidecar describes it."""

    id: str
    file: str  # the archive's file name in its owner's directory
    owner: str
    server: str
    display_name: str
    proposal: str
    plan: str
    backend: str
    created: str  # ISO 8601, UTC: when the archive was made (retention counts from here)
    size: int
    image_id: str = ""  # an image kept by the cloud (OpenStack): no local file
    image_name: str = ""

    def sidecar(self) -> dict:
        """The JSON of the sidecar (the image fields only for an image: a file's sidecar is as before)."""
        return {k: v for k, v in asdict(self).items() if v or k not in ("image_id", "image_name")}

    @property
    def created_at(self) -> datetime:
        return datetime.fromisoformat(self.created)

    def kept_until(self, retention_days: float) -> datetime:
        return self.created_at + timedelta(days=retention_days)

    @property
    def restorable(self) -> bool:
        return self.backend in RESTORABLE_BACKENDS

    @property
    def size_text(self) -> str:
        return human_size(self.size)


def _safe(name: str) -> str:
    """A file name made of `name`, one-to-one: characters outside a small set become %XX."""
    safe = re.sub(r"[^A-Za-z0-9@_.+-]", lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), name)
    return safe.replace(".", "%2E", 1) if safe in {"", ".", ".."} or safe.startswith(".") else safe


def owner_dir(archive_dir: str | Path, owner: str) -> Path:
    return Path(archive_dir) / _safe(owner)


def archive_id(server: str, when: datetime) -> str:
    """`<server>-<UTC stamp>`: sorts by server then time, and is the archive's name on the page."""
    server_part = re.sub(r"[^A-Za-z0-9_.-]", "_", server)[:100].lstrip(".-") or "instance"
    return f"{server_part}-{when.astimezone(UTC).strftime(STAMP_FORMAT)}"


def read_archive(directory: Path, archive: str) -> Archive | None:
    """The archive `archive` (an id) in `directory`; None if the id is malformed, unknown, or its
    file is gone. Blocking: call it in an executor."""
    if not isinstance(archive, str) or not ARCHIVE_ID.fullmatch(archive):
        return None
    try:
        data = json.loads((directory / f"{archive}.json").read_text())
        found = Archive(**{k: data[k] for k in Archive.__dataclass_fields__ if k in data})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if found.id != archive or "/" in found.file or not (found.image_id or (directory / found.file).is_file()):
        return None
    return found


def list_archives(archive_dir: str | Path, owner: str) -> list[Archive]:
    """The owner's archives, newest first (blocking: call it in an executor)."""
    directory = owner_dir(archive_dir, owner)
    try:
        names = [p.name.removesuffix(".json") for p in directory.glob("*.json")]
    except OSError:
        return []
    found = (read_archive(directory, name) for name in names)
    return sorted((a for a in found if a is not None), key=lambda a: a.created, reverse=True)


def find_archive(archive_dir: str | Path, owner: str, archive: str) -> Archive | None:
    """The owner's archive with this id, or None (blocking: call it in an executor)."""
    return read_archive(owner_dir(archive_dir, owner), archive)


def archive_file(archive_dir: str | Path, archive: Archive) -> Path:
    return owner_dir(archive_dir, archive.owner) / archive.file


def restore_source(archive_dir: str | Path, archive: Archive) -> str:
    """`InstanceSpec.restore_from`: the archive's path, or `glance:<image id>` for a cloud's image."""
    return f"glance:{archive.image_id}" if archive.image_id else str(archive_file(archive_dir, archive))


def _write_private(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(partial, path)


def _private_dir(archive_dir: Path, directory: Path) -> None:
    for d in (archive_dir, directory):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)


async def archive_instance(backend: Backend, state: dict, *, archive_dir: str, owner: str, server: str,
                           display_name: str, options: Mapping[str, object], backend_name: str,
                           now: datetime | None = None) -> Archive | None:
    """Archive an instance's home (or disk) with its sidecar; None if it never had one.

    Raises BackendError (ArchiveNotSupported included) with a message for people: the caller
    then deletes nothing.
    """
    now = now or datetime.now(UTC)
    loop = asyncio.get_running_loop()
    directory = owner_dir(archive_dir, owner)
    ident = archive_id(server, now)
    try:
        await loop.run_in_executor(None, _private_dir, Path(archive_dir), directory)
        made = await backend.archive(state, directory / ident)
        if made is None:
            return None
        stored = {"image_id": made.image_id, "image_name": made.image_name, "size": made.size,
                  "file": ident + made.extension} if isinstance(made, StoredImage) else \
            {"file": made.name, "size": (await loop.run_in_executor(None, made.stat)).st_size}
        archive = Archive(
            id=ident, owner=owner, server=server, display_name=display_name,
            proposal=str(options.get("proposal") or ""), plan=str(options.get("plan") or ""),
            backend=backend_name, created=now.isoformat(timespec="seconds"), **stored)
        await loop.run_in_executor(
            None, _write_private, directory / f"{ident}.json", json.dumps(archive.sidecar(), indent=1))
        return archive
    except BackendError:
        raise
    except Exception as e:  # a full disk, a permission: the person gets a sentence, the log the detail
        raise BackendError("The instance's home could not be archived, so it was not deleted; ask an admin.",
                           reason="archive", log_detail=f"{type(e).__name__}: {e}") from e


def can_archive(backend_name: str, classes: Mapping[str, str], config: Config | None = None) -> bool:
    """Does this backend archive before deleting, as `config` sets it up? (A sweep deletes only
    instances that do.) A backend may say no for some settings (`archives_before_delete`)."""
    cls = import_item(classes[backend_name]) if backend_name in classes else Backend
    if cls.archive is Backend.archive:
        return False
    check = getattr(cls, "archives_before_delete", None)
    return check(config) if check else True


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


class ArchiveDownloadHandler(BaseHandler):
    """GET /hub/visa/archives/<owner>/<id>: the owner downloads an archive of theirs."""

    chunk_size = 1 << 20

    @web.authenticated
    async def get(self, owner: str, archive: str) -> None:
        user = self.current_user
        if owner != user.name:
            raise web.HTTPError(403, "Only the owner of an archived home may download it.")
        spawner = user.spawner  # the default spawner carries the configuration
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(None, find_archive, spawner.archive_dir or "", owner, archive)
        if not spawner.archive_dir or found is None:
            raise web.HTTPError(404, "No such archive: it may have passed its retention and been removed.")
        if found.image_id:  # kept by the cloud: streamed from its image service by the backend
            await self._send(found, spawner.backend(found.backend).archive_chunks(found.image_id))
            return
        path = archive_file(spawner.archive_dir, found)
        try:
            f = await loop.run_in_executor(None, open, path, "rb")
        except OSError:
            raise web.HTTPError(404, "No such archive: it may have passed its retention and been removed.") from None
        try:
            await self._send(found, self._read(f))
        finally:
            f.close()

    async def _read(self, f) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        while chunk := await loop.run_in_executor(None, f.read, self.chunk_size):
            yield chunk

    async def _send(self, found: Archive, chunks: AsyncIterator[bytes]) -> None:
        ext = found.file[len(found.id):]
        self.set_header("Content-Type", MEDIA_TYPES.get(ext, "application/octet-stream"))
        self.set_header("Content-Disposition", f'attachment; filename="{found.file}"')
        self.set_header("Content-Length", str(found.size))
        self.log.info("%s downloads the archive %s", self.current_user.name, found.file)
        sent = 0
        try:
            async for chunk in chunks:
                self.write(chunk)
                await self.flush()
                sent += len(chunk)
        except BackendError as e:  # the cloud failed: a message if nothing was sent yet, else a cut download
            self.log.error("Download of the archive %s failed after %d bytes: %s %s", found.file, sent, e.message,
                           e.log_detail)
            if not sent:
                self.clear_header("Content-Disposition")
                raise web.HTTPError(502, e.message) from None


def _remove_files(directory: Path, archive: Archive) -> None:
    if not archive.image_id:
        (directory / archive.file).unlink(missing_ok=True)
    (directory / f"{archive.id}.json").unlink(missing_ok=True)


class ArchiveAPIHandler(APIHandler):
    """DELETE /hub/api/visa/archives/<owner>/<id>: remove an archive, sidecar last. The retention
    prune of visa-ops uses it for archives the cloud keeps: only the hub holds the cloud's
    credentials. Scope `delete:servers` on the owner (the visa-ops token has it for everyone)."""

    @needs_scope("delete:servers")
    async def delete(self, user_name: str, archive: str) -> None:
        user = self.find_user(user_name)
        spawner = user.spawner if user else None
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(None, find_archive, spawner.archive_dir, user_name, archive) \
            if spawner and spawner.archive_dir else None
        if found is None:
            raise web.HTTPError(404, "No such archive.")
        if found.image_id:
            try:
                await spawner.backend(found.backend).delete_archive(found.image_id)
            except BackendError as e:
                self.log.error("Archive %s/%s: image not deleted: %s %s", user_name, archive, e.message, e.log_detail)
                raise web.HTTPError(502, e.message) from None
        await loop.run_in_executor(None, _remove_files, owner_dir(spawner.archive_dir, user_name), found)
        self.log.info("Archive %s/%s removed (%s)", user_name, archive, found.image_id or found.file)
        self.set_status(204)
        self.finish()


handlers = [(r"/visa/archives/([^/]+)/([^/]+)", ArchiveDownloadHandler),
            (r"/api/visa/archives/([^/]+)/([^/]+)", ArchiveAPIHandler)]
