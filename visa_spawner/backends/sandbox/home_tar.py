"""A home into a tar archive without ever following a link, for a hub that runs as root.

``tarfile.add`` checks each path with ``lstat`` and then opens it *by path*: a running instance
(the owner's "Download my work" reads a live home) can swap a file, or a directory above it, for a
symbolic link between the two, and the root hub would put ``/etc/shadow`` or another person's home
into the owner's archive. Here every step is relative to an open directory descriptor and opened
with ``O_NOFOLLOW``; what a file is comes from ``fstat`` of the descriptor that is read, so what is
archived is what was opened. Links are stored as links; sockets, devices and FIFOs are skipped.
"""
from __future__ import annotations

import os
import stat
import tarfile

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
MAX_DEPTH = 200  # deeper directories are left out (each level holds a descriptor while it is read)


def _info(name: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = kind, stat.S_IMODE(st.st_mode)
    info.uid, info.gid, info.mtime = st.st_uid, st.st_gid, int(st.st_mtime)
    info.uname = info.gname = ""  # the instance's account is deleted with it: names mean nothing
    return info


def add_home(tar: tarfile.TarFile, home: str | os.PathLike) -> None:
    """Add the directory `home` as ``.`` and everything under it (blocking: run it in an executor)."""
    fd = os.open(home, _DIR_FLAGS)
    try:
        _add_dir(tar, fd, ".", 0)
    finally:
        os.close(fd)


def _add_dir(tar: tarfile.TarFile, fd: int, arcname: str, depth: int) -> None:
    tar.addfile(_info(arcname, os.fstat(fd), tarfile.DIRTYPE))
    if depth >= MAX_DEPTH:
        return
    for name in sorted(os.listdir(fd)):
        path = f"{arcname}/{name}"
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:  # removed meanwhile
            continue
        if stat.S_ISLNK(st.st_mode):
            info = _info(path, st, tarfile.SYMTYPE)
            info.linkname = os.readlink(name, dir_fd=fd)
            tar.addfile(info)
        elif stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
            try:
                child = os.open(name, _DIR_FLAGS if stat.S_ISDIR(st.st_mode) else _FILE_FLAGS, dir_fd=fd)
            except OSError:  # swapped for a link (ELOOP), or something else, meanwhile: skipped
                continue
            try:
                _add_opened(tar, child, path, depth + 1)
            finally:
                os.close(child)


def _add_opened(tar: tarfile.TarFile, fd: int, arcname: str, depth: int) -> None:
    """An opened entry as what its descriptor is now (a directory, or a regular file)."""
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        _add_dir(tar, fd, arcname, depth)
    elif stat.S_ISREG(st.st_mode):
        info = _info(arcname, st, tarfile.REGTYPE)
        info.size = st.st_size
        with os.fdopen(os.dup(fd), "rb") as f:
            tar.addfile(info, _Exactly(f, st.st_size))


class _Exactly:
    """`size` bytes of a file that may grow or shrink while read (zeros pad a shrunk one), so the
    tar entry matches its header."""

    def __init__(self, f, size: int) -> None:
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        data += b"\0" * (n - len(data))
        self.left -= n
        return data
