"""Archives of deleted instances: naming, sidecar, the sandbox's tar.gz, lookups by id only, and
the restore field of the New-instance form."""
from __future__ import annotations

import json
import stat
import subprocess
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from visa_spawner.archives import (
    ARCHIVE_ID,
    Archive,
    archive_file,
    archive_id,
    archive_instance,
    can_archive,
    find_archive,
    list_archives,
    owner_dir,
)
from visa_spawner.backends.base import ArchiveNotSupported, Backend, BackendError, Plan, private_partial
from visa_spawner.backends.sandbox.backend import SandboxBackend
from visa_spawner.options import OptionError, check_restore, validate_request

BACKEND_CLASSES = {name: f"visa_spawner.backends.{name}.backend.{cls}Backend"
                   for name, cls in (("sandbox", "Sandbox"), ("qemu", "Qemu"), ("openstack", "OpenStack"))}
WHEN = datetime(2026, 12, 3, 8, 5, 9, tzinfo=UTC)
SIDECAR_KEYS = {"owner", "server", "display_name", "proposal", "plan", "backend", "created", "size"}
OPTIONS = {"proposal": "P-2026-011", "plan": "sandbox-small", "screen": "1280x720", "keyboard": "fr"}


@pytest.mark.parametrize("server, expected", [
    ("sans-reduction", "sans-reduction-20261203T080509Z"),
    ("a/b c", "a_b_c-20261203T080509Z"),
    ("../../etc", "_.._etc-20261203T080509Z"),
    ("", "instance-20261203T080509Z"),
])
def test_archive_ids_are_safe_file_names(server, expected):
    ident = archive_id(server, WHEN)
    assert ident == expected
    assert ARCHIVE_ID.fullmatch(ident) and "/" not in ident


@pytest.mark.parametrize("owner", ["alice", "..", ".", "a/../../b", "x%2Fy", "ümlaut@site"])
def test_owner_directories_stay_inside_the_archive_dir(tmp_path, owner):
    d = owner_dir(tmp_path, owner)
    assert d.parent == tmp_path and d.name not in {".", ".."} and "/" not in d.name
    assert len({owner_dir(tmp_path, o) for o in ("x/y", "x%2Fy", "x_y")}) == 3  # one-to-one


def make_home(tmp_path: Path, account: str = "visa-alice-x") -> tuple[SandboxBackend, Path]:
    backend = SandboxBackend(state_dir=str(tmp_path / "sandbox"))
    home = tmp_path / "sandbox" / "homes" / account
    (home / "results").mkdir(parents=True)
    (home / "results" / "fit.txt").write_text("chi2 = 1.02\n")
    (home / ".bashrc").write_text("export X=1\n")
    return backend, home


async def archive(tmp_path: Path, backend: Backend, server: str = "sans", options=OPTIONS, backend_name="sandbox"):
    return await archive_instance(
        backend, {"account": "visa-alice-x", "owner": "alice", "server_name": server},
        archive_dir=str(tmp_path / "archives"), owner="alice", server=server, display_name="SANS “March”",
        options=options, backend_name=backend_name, now=WHEN)


async def test_sandbox_home_is_archived_as_a_private_tar_gz_with_its_sidecar(tmp_path):
    backend, _ = make_home(tmp_path)
    made = await archive(tmp_path, backend)
    path = archive_file(tmp_path / "archives", made)
    assert path == tmp_path / "archives" / "alice" / "sans-20261203T080509Z.tar.gz"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "archives").stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    sidecar_path = path.parent / "sans-20261203T080509Z.json"
    assert stat.S_IMODE(sidecar_path.stat().st_mode) == 0o600
    sidecar = json.loads(sidecar_path.read_text())
    assert SIDECAR_KEYS <= sidecar.keys()
    assert sidecar | {"size": 0} == {
        "id": "sans-20261203T080509Z", "file": path.name, "owner": "alice", "server": "sans",
        "display_name": "SANS “March”", "proposal": "P-2026-011", "plan": "sandbox-small", "backend": "sandbox",
        "created": "2026-12-03T08:05:09+00:00", "size": 0}
    assert sidecar["size"] == path.stat().st_size > 0
    with tarfile.open(path) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile("./results/fit.txt").read() == b"chi2 = 1.02\n"
    assert {"./.bashrc", "./results"} <= members.keys()
    assert all(m.uname == "" and m.gname == "" for m in members.values())  # numeric owners only
    assert not list(path.parent.glob("*.partial"))


async def test_archives_are_found_by_id_only_and_listed_newest_first(tmp_path):
    backend, _ = make_home(tmp_path)
    older = await archive(tmp_path, backend, server="old")
    newer = await archive_instance(backend, {"account": "visa-alice-x"}, archive_dir=str(tmp_path / "archives"),
                                   owner="alice", server="new", display_name="New", options=OPTIONS,
                                   backend_name="sandbox", now=WHEN.replace(hour=9))
    assert [a.id for a in list_archives(tmp_path / "archives", "alice")] == [newer.id, older.id]
    assert find_archive(tmp_path / "archives", "alice", older.id) == older
    assert list_archives(tmp_path / "archives", "bob") == []
    for bad in ("../alice/" + older.id, older.file, "old", older.id + "/", "", "x" * 200):
        assert find_archive(tmp_path / "archives", "alice", bad) is None, bad
    assert find_archive(tmp_path / "archives", "bob", older.id) is None  # another person's directory
    archive_file(tmp_path / "archives", older).unlink()  # pruned: its sidecar alone is no archive
    assert find_archive(tmp_path / "archives", "alice", older.id) is None


async def test_a_sandbox_that_never_had_a_home_has_nothing_to_archive(tmp_path):
    backend = SandboxBackend(state_dir=str(tmp_path / "sandbox"))
    assert await archive(tmp_path, backend) is None
    assert list_archives(tmp_path / "archives", "alice") == []


async def test_a_backend_that_cannot_archive_says_so_and_leaves_nothing(tmp_path):
    with pytest.raises(ArchiveNotSupported, match="cannot be archived yet, so this one was not deleted"):
        await archive(tmp_path, Backend(), backend_name="openstack")
    assert not any(p.is_file() for p in (tmp_path / "archives").rglob("*"))
    assert can_archive("sandbox", BACKEND_CLASSES) and can_archive("qemu", BACKEND_CLASSES)
    assert not can_archive("openstack", BACKEND_CLASSES)


async def test_an_archive_that_fails_midway_is_a_clear_error_and_no_file(tmp_path):
    class FullDisk(Backend):
        async def archive(self, state, dest):
            with private_partial(dest.with_name(dest.name + ".tar.gz")) as partial:
                partial.write_bytes(b"half")
                raise OSError(28, "No space left on device")

    with pytest.raises(BackendError, match="could not be archived, so it was not deleted") as e:
        await archive(tmp_path, FullDisk())
    assert "No space left" in e.value.log_detail
    assert not any(p.is_file() for p in (tmp_path / "archives").rglob("*"))


def test_private_partial_renames_only_on_success(tmp_path):
    target = tmp_path / "a.tar.gz"
    with private_partial(target) as partial:
        assert stat.S_IMODE(partial.stat().st_mode) == 0o600
        partial.write_bytes(b"ok")
    assert target.read_bytes() == b"ok" and not partial.exists()
    with pytest.raises(ValueError), private_partial(tmp_path / "b.tar.gz") as partial:
        raise ValueError
    assert not (tmp_path / "b.tar.gz").exists() and not partial.exists()


# -- restore: the New-instance form's `restore` field ---------------------------------------------
SANDBOX = Plan("sandbox-small", "Small sandbox", "sandbox", 1, 2048, default=True)
VM = Plan("vm", "Virtual machine", "qemu", 2, 2048)
CLOUD = Plan("cloud", "Cloud server", "openstack", 2, 2048)


def an_archive(ident="sans-20261203T080509Z", proposal="P-2026-011", backend="sandbox") -> Archive:
    return Archive(id=ident, file=ident + ".tar.gz", owner="alice", server="sans", display_name="SANS",
                   proposal=proposal, plan="sandbox-small", backend=backend, created=WHEN.isoformat(), size=10)


MINE = {a.id: a for a in (an_archive(), an_archive("vm-20261203T080509Z", backend="qemu"),
                          an_archive("other-20261203T080509Z", proposal="P-2021-007"),
                          an_archive("cloud-20261203T080509Z", backend="openstack"))}


@pytest.mark.parametrize("restore, proposal, plan, error", [
    ("", "P-2026-011", SANDBOX, None),
    ("sans-20261203T080509Z", "P-2026-011", SANDBOX, None),
    ("bobs-20261203T080509Z", "P-2026-011", SANDBOX, "not one of yours"),
    ("../bob/sans-20261203T080509Z", "P-2026-011", SANDBOX, "not one of yours"),
    ("sans-20261203T080509Z", "P-2021-007", SANDBOX, "belongs to proposal P-2026-011"),
    ("other-20261203T080509Z", "P-2026-011", SANDBOX, "belongs to proposal P-2021-007"),
    ("sans-20261203T080509Z", "P-2026-011", VM, "Choose a sandbox plan"),
    ("vm-20261203T080509Z", "P-2026-011", VM, None),  # a qemu archive becomes a new VM's disk
    ("vm-20261203T080509Z", "P-2026-011", SANDBOX, "Choose a qemu plan"),
    ("cloud-20261203T080509Z", "P-2026-011", VM, "Choose a openstack plan"),  # a snapshot boots a new server
    ("cloud-20261203T080509Z", "P-2026-011", CLOUD, None),
])
def test_restore_is_only_of_ones_own_archive_into_the_same_proposal(restore, proposal, plan, error):
    if error is None:
        assert check_restore(restore, MINE, proposal, plan) == restore
    else:
        with pytest.raises(OptionError, match=error):
            check_restore(restore, MINE, proposal, plan)


ENTITLEMENTS = {"quota": 3, "roles": ["USER"], "proposals": [{"id": "P-2026-011"}, {"id": "P-2021-007"}]}


def test_the_form_carries_restore_into_the_instance_options():
    form = {"name": ["SANS again"], "proposal": ["P-2026-011"], "plan": ["sandbox-small"],
            "restore": ["sans-20261203T080509Z"]}
    request = validate_request(form, entitlements=ENTITLEMENTS, plans=[SANDBOX, VM], existing={}, archives=MINE)
    assert request.user_options()["restore"] == "sans-20261203T080509Z"
    without = validate_request({**form, "restore": [""]}, entitlements=ENTITLEMENTS, plans=[SANDBOX], existing={})
    assert "restore" not in without.user_options()
    with pytest.raises(OptionError, match="not one of yours"):  # no archives given: nothing is the person's
        validate_request(form, entitlements=ENTITLEMENTS, plans=[SANDBOX], existing={})
    # a restart does not check it again: the home was restored at the first start
    restart = validate_request(form, entitlements=ENTITLEMENTS, plans=[SANDBOX], existing={}, new=False)
    assert restart.restore == ""


async def test_a_tar_written_by_the_backend_is_readable_by_gnu_tar(tmp_path):
    """GNU tar (which restores, as the new account) reads what tarfile wrote."""
    backend, home = make_home(tmp_path)
    path = await backend.archive({"account": home.name}, tmp_path / "x")
    assert path == tmp_path / "x.tar.gz"
    listing = subprocess.run(["tar", "-tzf", str(path)], capture_output=True, text=True, check=True).stdout
    assert "./results/fit.txt" in listing.splitlines()
