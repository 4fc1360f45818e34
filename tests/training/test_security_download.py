"""Security of "Download my work" (issue 19 review): the root hub archives a *running* course
instance's home, so the instance may swap a file or a directory for a link while the archive is
made. The swap is made here at the worst moment (right after the archiver looked at the entry):
the archive must hold the link or nothing, never what it points to. No hub (fast)."""
from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from visa_spawner.backends.sandbox.backend import _tar_home

SECRET = b"root-only secret\n"


def swap_after_stat(monkeypatch, victim: Path, replace) -> list[bool]:
    """Make every stat of `victim` that does not follow links swap it (once) just after it answered."""
    done: list[bool] = []
    real_stat, real_lstat = os.stat, os.lstat

    def hook(path, result):
        name = os.fsdecode(path)
        if not done and (name == str(victim) or name == victim.name):
            replace()
            done.append(True)
        return result

    def stat(path, *a, dir_fd=None, follow_symlinks=True):
        result = real_stat(path, *a, dir_fd=dir_fd, follow_symlinks=follow_symlinks)
        return hook(path, result) if not follow_symlinks else result

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(os, "lstat", lambda path, *a, **kw: hook(path, real_lstat(path, *a, **kw)))
    return done


def members(target: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(target) as tar:
        return {m.name: m for m in tar.getmembers()}


def read(target: Path, name: str) -> bytes:
    with tarfile.open(target) as tar:
        return tar.extractfile(name).read()


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "shadow").write_bytes(SECRET)
    (outside / "notes.txt").write_bytes(SECRET)
    home = tmp_path / "home"
    (home / "work").mkdir(parents=True)
    (home / "notes.txt").write_bytes(b"my notes\n")
    (home / "work" / "notes.txt").write_bytes(b"my work\n")
    return home, outside


def test_a_file_swapped_for_a_link_while_archived_is_not_followed(monkeypatch, layout, tmp_path) -> None:
    home, outside = layout
    victim = home / "notes.txt"

    def replace() -> None:
        victim.unlink()
        victim.symlink_to(outside / "shadow")

    done = swap_after_stat(monkeypatch, victim, replace)
    target = _tar_home(home, tmp_path / "a.tar.gz")
    monkeypatch.undo()
    assert done, "the swap never happened"
    found = members(target)
    entry = found.get("./notes.txt")
    assert entry is None or entry.issym() or read(target, "./notes.txt") == b"my notes\n"
    assert read(target, "./work/notes.txt") == b"my work\n"


def test_a_directory_swapped_for_a_link_while_archived_is_not_entered(monkeypatch, layout, tmp_path) -> None:
    home, outside = layout
    victim = home / "work"

    def replace() -> None:
        (victim / "notes.txt").unlink()
        victim.rmdir()
        victim.symlink_to(outside)

    done = swap_after_stat(monkeypatch, victim, replace)
    target = _tar_home(home, tmp_path / "a.tar.gz")
    monkeypatch.undo()
    assert done, "the swap never happened"
    found = members(target)
    assert all(read(target, name) != SECRET for name, m in found.items() if m.isfile()), sorted(found)


def test_links_are_kept_as_links_and_files_whole(layout, tmp_path) -> None:
    home, outside = layout
    (home / "link").symlink_to(outside / "shadow")
    (home / "dirlink").symlink_to(outside)
    os.mkfifo(home / "fifo")
    target = _tar_home(home, tmp_path / "a.tar.gz")
    found = members(target)
    assert found["./link"].issym() and found["./link"].linkname == str(outside / "shadow")
    assert found["./dirlink"].issym() and "./dirlink/shadow" not in found
    assert "./fifo" not in found and found["."].isdir() and found["./work"].isdir()
    assert read(target, "./notes.txt") == b"my notes\n" and found["./notes.txt"].uname == ""
    assert oct(os.stat(target).st_mode & 0o777) == "0o600"
