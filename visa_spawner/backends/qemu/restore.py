"""A new VM's disk made from an archived one, so an owner restores a deleted VM from the home page
as sandbox homes are restored.

`QemuBackend.archive` wrote a compressed, self-contained qcow2 (no backing image). The new
instance's disk is an uncompressed copy of it (`qemu-img convert`, a subprocess: the hub's event
loop keeps serving), not an overlay on it: the archive stays as it is until its retention ends and
is then pruned without breaking the VM. The VM boots cold from it (a warm-start memory snapshot
belongs to the base image's disk, not to this one) and gets its new instance config over fw_cfg,
as a stopped VM started again does.
"""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

from visa_spawner.backends.base import BackendError, private_partial


def restore_argv(qemu_img: str, archive: str, disk: str) -> list[str]:
    """A standalone, uncompressed qcow2 at `disk` with the archive's contents (format never probed)."""
    return [qemu_img, "convert", "-q", "-f", "qcow2", "-O", "qcow2", archive, disk]


def _private_dir(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)


async def restore_disk(qemu_img: str, archive: str | Path, disk: Path) -> None:
    """Write the instance's disk from `archive`; BackendError (and no disk) if it cannot be read.

    Blocking steps run in an executor or a subprocess, never on the event loop.
    """
    loop = asyncio.get_running_loop()
    if not await loop.run_in_executor(None, os.path.isfile, archive):
        raise BackendError("The archived disk no longer exists; nothing was created.", reason="restore",
                           log_detail=f"missing {archive}")
    await loop.run_in_executor(None, _private_dir, disk.parent)
    with private_partial(disk) as partial:
        proc = await asyncio.create_subprocess_exec(
            *restore_argv(qemu_img, str(archive), str(partial)),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        if proc.returncode:
            raise BackendError("The archived disk could not be restored into this instance; ask an admin.",
                               reason="restore", log_detail=out.decode(errors="replace")[-400:])
