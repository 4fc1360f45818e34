"""VisaSpawner.delete_forever: the home is archived first; without an archive nothing is deleted."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from traitlets import import_item

from visa_spawner.archives import list_archives
from visa_spawner.backends.base import Backend, BackendError, InstanceIdentity
from visa_spawner.backends.sandbox.backend import SandboxBackend
from visa_spawner.spawner import VisaSpawner

HERE = "tests.spawner.test_archive_delete"


def record_delete(state: dict) -> None:
    """A file, not a list: the hub imports these classes by name, maybe as another module object."""
    Path(state["record"]).write_text("deleted")


class RecordingSandbox(SandboxBackend):
    """The real sandbox archive; `delete` only records its call (no Unix account to remove here)."""

    async def delete(self, state: dict) -> None:
        record_delete(state)


class CloudWithoutArchives(Backend):
    async def delete(self, state: dict) -> None:
        record_delete(state)


def spawner(tmp_path, backend: str, **traits) -> VisaSpawner:
    s = VisaSpawner(
        user=SimpleNamespace(name="alice", url="/user/alice/", id=1),
        orm_spawner=SimpleNamespace(name="sans", display_name="SANS", state={}, server=None),
        user_options={"proposal": "P-2026-011", "plan": "sandbox-small"},
        backend_classes={"sandbox": f"{HERE}.RecordingSandbox", "openstack": f"{HERE}.CloudWithoutArchives"},
        archive_dir=str(tmp_path / "archives"), **traits)
    s.config.RecordingSandbox.state_dir = str(tmp_path / "sandbox")
    s.identity = InstanceIdentity(backend=backend, owner="alice", server_name="sans")
    s.backend_state = {"account": "visa-alice-sans", "record": str(tmp_path / "deleted")}
    return s


@pytest.fixture(autouse=True)
def _fresh_backends():
    """Each test its own backend objects (one per hub otherwise), whichever module object holds them."""
    for name in ("RecordingSandbox", "CloudWithoutArchives"):
        import_item(f"{HERE}.{name}").clear_instance()
    yield


async def test_the_home_is_archived_then_deleted(tmp_path):
    home = tmp_path / "sandbox" / "homes" / "visa-alice-sans"
    home.mkdir(parents=True)
    (home / "notes.txt").write_text("keep me")
    await spawner(tmp_path, "sandbox").delete_forever()
    [archive] = list_archives(tmp_path / "archives", "alice")
    assert (archive.server, archive.display_name, archive.proposal, archive.backend) == (
        "sans", "SANS", "P-2026-011", "sandbox")
    assert (tmp_path / "deleted").exists()


async def test_a_backend_that_cannot_archive_deletes_as_asked_and_says_so(tmp_path, caplog):
    """An owner's or admin's own deletion goes ahead; lifecycle rules never ask it (visa_ops)."""
    await spawner(tmp_path, "openstack").delete_forever()
    assert (tmp_path / "deleted").exists()
    assert "not archived (the openstack backend cannot archive)" in caplog.text
    assert not (tmp_path / "archives").exists() or not list_archives(tmp_path / "archives", "alice")


async def test_a_failed_archive_deletes_nothing(tmp_path):
    home = tmp_path / "sandbox" / "homes" / "visa-alice-sans"
    home.mkdir(parents=True)
    (tmp_path / "archives").write_text("not a directory")  # the archive cannot be written
    with pytest.raises(BackendError, match="could not be archived, so it was not deleted"):
        await spawner(tmp_path, "sandbox").delete_forever()
    assert not (tmp_path / "deleted").exists() and home.is_dir()


async def test_archiving_off_deletes_directly(tmp_path):
    await spawner(tmp_path, "openstack", archive_on_delete=False).delete_forever()
    assert (tmp_path / "deleted").exists()
