"""A course's materials put into a VM instance's home by the hub (issue 19): OpenStack and qemu.

Why the hub pushes them through the instance's own Jupyter (docs/openstack.md, "Course materials"):
the instance's disk is the image's (a VM has no host folder to copy into: qemu's home lives in its
overlay disk, OpenStack's on the server), cloud-init user-data holds at most 64 KB, and a pooled
or warm-restored machine already runs the start script it was built with. Once the instance is up
and before the spawn is reported ready (so before the proxy routes the participant to it), the hub
writes each file with Jupyter's contents API, authenticated with a token of the owner made for this
push (scope ``access:servers!server=<owner>/<server>``: that one server, nothing else; expiring in
`token_seconds` and revoked right after). Not the instance's own API token: the instance refuses
it (visa_instance.room: any process in the instance can read it). Jupyter runs as the owner, so
the files are the owner's; they land where the start script made the owner's home.
No image change, no new endpoint on the hub, nothing the guest must trust: the hub only sends the
course's own folder, size-limited before any machine is started, and checks each file's SHA-256
as Jupyter computes it on the instance's disk.

What is sent: directories and regular files. Symbolic links (a link must not make the hub read a
host file), other file types and hidden names (Jupyter refuses them by default) are skipped.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from traitlets import Float, Integer, Unicode
from traitlets.config import LoggingConfigurable

from visa_spawner.backends.base import BackendError, InstanceSpec, ProgressCallback
from visa_spawner.backends.guest.cloudinit import unix_account


class MaterialsError(ValueError):
    """The materials cannot be delivered; the message is for the participant and the trainer."""


@dataclass(frozen=True)
class Item:
    """One directory or regular file of a materials folder (`path` relative, '/'-separated)."""

    path: str
    directory: bool
    size: int = 0


def collect(source: str, *, max_bytes: int, max_files: int) -> list[Item]:
    """What of `source` is delivered, parents before children (blocking: run it in an executor).
    MaterialsError when the folder is missing or holds more than the limits allow."""
    root = Path(source)
    if not source or not root.is_dir():
        raise MaterialsError("The course's materials folder is missing on the hub; ask the trainer.")
    items: list[Item] = []
    total = files = 0
    for top, dirs, names in os.walk(root, followlinks=False):
        rel = Path(top).relative_to(root)
        kept = []
        for name in sorted(dirs):
            if not name.startswith(".") and stat.S_ISDIR(os.lstat(Path(top) / name).st_mode):
                kept.append(name)
                items.append(Item((rel / name).as_posix(), True))
        dirs[:] = kept  # links to directories and hidden ones are not walked
        for name in sorted(names):
            st = os.lstat(Path(top) / name)
            if name.startswith(".") or not stat.S_ISREG(st.st_mode):
                continue
            total, files = total + st.st_size, files + 1
            if files > max_files or total > max_bytes:
                raise MaterialsError(
                    f"The course's materials are too big for a VM instance (more than {max_files} files or "
                    f"{max_bytes / 2**20:g} MiB); ask the trainer.")
            items.append(Item((rel / name).as_posix(), False, st.st_size))
    return items


def read_file(source: str, rel: str) -> bytes:
    """One file's bytes, opened without following a link (blocking)."""
    fd = os.open(Path(source) / rel, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        return f.read()


class MaterialsPush(LoggingConfigurable):
    """Checks a course's materials before a server is requested and writes them into the instance."""

    max_bytes = Integer(
        64 * 2**20, config=True,
        help="Most bytes of course materials pushed into one VM instance (all files together). Larger "
        "materials fail the start at once, before any server is requested, with a message for the trainer.")
    max_files = Integer(2000, config=True, help="Most files of course materials pushed into one VM instance.")
    home = Unicode(
        "home/{account}", config=True,
        help="The owner's home as a path of the instance's Jupyter contents API (its root_dir is '/'); "
        "{account} is the owner's account in the instance (the start script's useradd makes /home/<account>).")
    request_timeout = Float(60, config=True, help="Seconds for one request to the instance's Jupyter.")
    token_seconds = Integer(600, config=True, help="Lifetime of the owner's token made for one push "
                            "(revoked as soon as the push ends).")

    async def check(self, source: str) -> list[Item]:
        """The items to deliver (MaterialsError as a BackendError a person can read)."""
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, lambda: collect(source, max_bytes=self.max_bytes, max_files=self.max_files))
        except MaterialsError as e:
            raise BackendError(str(e), reason="materials", log_detail=source) from None
        except OSError as e:  # unreadable: the hub's host, not the person
            raise BackendError("The course's materials could not be read on the hub; ask the trainer.",
                               reason="materials", log_detail=f"{source}: {e}") from None

    async def push(self, spec: InstanceSpec, items: list[Item] | None, address: str, port: int,
                   progress: ProgressCallback) -> None:
        """`spec`'s materials (`items`, from `check`; None: no materials) into its new instance at
        address:port, before the spawn is reported ready."""
        if items is None:
            return
        progress(95, "Copying the course materials into your home")
        token, revoke = self.owner_token(spec.owner, spec.server_name)
        try:
            files = await self.deliver(items, spec.materials, token=token, account=unix_account(spec.owner),
                                       url=f"http://{address}:{port}{spec.env.get('JUPYTERHUB_SERVICE_PREFIX', '/')}")
        finally:
            revoke()
        self.log.info("%s/%s: %d course files copied into the instance", spec.owner, spec.server_name, files)

    def owner_token(self, owner: str, server: str) -> tuple[str, Callable[[], None]]:
        """(token, revoke): a token of `owner` for `server` only, made by the running hub (the one
        place this module reaches into JupyterHub's objects: the backend is given no API token)."""
        from jupyterhub import orm
        from jupyterhub.app import JupyterHub

        app = JupyterHub.instance()
        token = app.users[owner].new_api_token(
            note=f"visa: course materials for {server}", expires_in=self.token_seconds,
            scopes=[f"access:servers!server={owner}/{server}"])

        def revoke() -> None:
            found = orm.APIToken.find(app.db, token)
            if found is not None:
                app.db.delete(found)
                app.db.commit()
        return token, revoke

    async def deliver(self, items: list[Item], source: str, *, url: str, token: str, account: str) -> int:
        """Write `items` into the home of the Jupyter at `url` (its base URL, ending in '/') and check
        every file's SHA-256 there; the number of files. BackendError on any failure."""
        base = url + "api/contents/" + "/".join(quote(p, safe="") for p in self.home.format(account=account).split("/"))
        headers = {"Authorization": f"token {token}", "Content-Type": "application/json"}
        loop, client, done = asyncio.get_running_loop(), AsyncHTTPClient(), 0
        for item in items:
            target = base + "/" + "/".join(quote(p, safe="") for p in item.path.split("/"))
            try:
                if item.directory:
                    await self._call(client, "PUT", target, headers, {"type": "directory"})
                    continue
                data = await loop.run_in_executor(None, read_file, source, item.path)
                await self._call(client, "PUT", target, headers, {
                    "type": "file", "format": "base64", "content": base64.b64encode(data).decode()})
                model = await self._call(client, "GET", target + "?content=0&hash=1", headers)
            except (HTTPClientError, OSError, ValueError) as e:
                answer = getattr(getattr(e, "response", None), "body", b"") or b""
                raise BackendError("The course materials could not be copied into the instance; ask the trainer.",
                                   reason="materials", log_detail=f"{item.path}: {e} {answer[:200]!r}") from None
            if (model.get("hash_algorithm"), model.get("hash")) != ("sha256", hashlib.sha256(data).hexdigest()):
                raise BackendError("A course file arrived damaged in the instance; ask the trainer.",
                                   reason="materials", log_detail=f"{item.path}: {model.get('hash')!r}")
            done += 1
        return done

    async def _call(self, client: AsyncHTTPClient, method: str, target: str, headers: dict,
                    body: dict | None = None) -> dict:
        response = await client.fetch(HTTPRequest(
            target, method=method, headers=headers, body=None if body is None else json.dumps(body),
            request_timeout=self.request_timeout, follow_redirects=False))
        return json.loads(response.body or b"{}")


class DeliversMaterials:
    """Mixed into a VM backend whose homes live on the machine's own disk: the hub pushes a course's
    materials into each new machine, so a reset (visa_spawner.reset) deletes the machine and starts
    a new one."""

    delivers_materials = True

    @cached_property
    def materials(self) -> MaterialsPush:
        """Course materials pushed into a new instance's home."""
        return MaterialsPush(parent=self, log=self.log)
