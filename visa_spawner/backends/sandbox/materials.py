"""A course's materials copied into a fresh sandbox home, owned by the instance's account.

Run as root (the hub) in an executor. Symbolic links are skipped, never followed or copied: a
link in a materials folder must not let a participant read a host file through their home, nor
make root write outside it. Only directories and regular files are copied; everything else
(sockets, devices, fifos) is skipped.
"""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path


def copy_materials(source: Path, home: Path, uid: int, gid: int) -> int:
    """Copy the tree under `source` into `home` (which exists), owned uid:gid; the number of
    files copied. Existing names in `home` are kept (a fresh home has none)."""
    copied = 0
    for top, dirs, files in os.walk(source, followlinks=False):
        rel = Path(top).relative_to(source)
        target_dir = home / rel
        for name in list(dirs):
            src = Path(top) / name
            if stat.S_ISLNK(os.lstat(src).st_mode):
                dirs.remove(name)  # os.walk would not descend, but neither do we create it
                continue
            target = target_dir / name
            target.mkdir(mode=0o755, exist_ok=True)
            os.lchown(target, uid, gid)
        for name in files:
            src, target = Path(top) / name, target_dir / name
            if not stat.S_ISREG(os.lstat(src).st_mode) or os.path.lexists(target):
                continue
            _copy_file(src, target, uid, gid)
            copied += 1
    return copied


def _copy_file(src: Path, target: Path, uid: int, gid: int) -> None:
    """One regular file, opened without following links, created exclusively (never through an
    existing name), its mode the source's permission bits less group/other write."""
    fd_in = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        mode = stat.S_IMODE(os.fstat(fd_in).st_mode) & 0o755 | 0o600
        fd_out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd_in, "rb", closefd=False) as f_in, os.fdopen(fd_out, "wb") as f_out:
            shutil.copyfileobj(f_in, f_out)
            os.fchown(f_out.fileno(), uid, gid)
            os.fchmod(f_out.fileno(), mode)
    finally:
        os.close(fd_in)
