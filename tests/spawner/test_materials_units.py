"""Course materials for VM instances (materials.py) without a cloud: what of a folder is sent and
the limits, and the push against a small stand-in of Jupyter's contents API (paths, the owner's
token, the SHA-256 check that catches a damaged file)."""
from __future__ import annotations

import base64
import hashlib
import json
import os

import pytest
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler

from visa_spawner.backends.base import BackendError
from visa_spawner.backends.guest.materials import Item, MaterialsError, MaterialsPush, collect


@pytest.fixture
def folder(tmp_path):
    src = tmp_path / "materials"
    (src / "b" / "deep").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "b" / "deep" / "c.bin").write_bytes(bytes(range(256)))
    (src / ".ipynb_checkpoints").mkdir()
    (src / ".secret").write_text("hidden")
    os.symlink("/etc/hostname", src / "link")
    os.symlink("/etc", src / "dirlink")
    os.mkfifo(src / "fifo")
    return src


def test_collect_sends_dirs_and_regular_files_parents_first(folder):
    items = collect(str(folder), max_bytes=10_000, max_files=10)
    assert items == [Item("b", True), Item("a.txt", False, 5), Item("b/deep", True), Item("b/deep/c.bin", False, 256)]


@pytest.mark.parametrize("limits, why", [({"max_bytes": 260, "max_files": 10}, "too big"),
                                         ({"max_bytes": 10_000, "max_files": 1}, "more than 1 files")])
def test_collect_limits(folder, limits, why):
    with pytest.raises(MaterialsError, match=why):
        collect(str(folder), **limits)


@pytest.mark.parametrize("path", ["", "/nonexistent/materials", "/etc/hostname"])
def test_collect_missing_folder(path):
    with pytest.raises(MaterialsError, match="materials folder is missing"):
        collect(path, max_bytes=1, max_files=1)


async def test_check_is_a_backend_error_for_the_person(tmp_path):
    with pytest.raises(BackendError, match="missing on the hub") as e:
        await MaterialsPush().check(str(tmp_path / "none"))
    assert e.value.reason == "materials"


class FakeContents(RequestHandler):
    """PUT/GET of Jupyter's contents API, files in `store`; `damage` flips the stored bytes."""

    def initialize(self, store: dict, seen: list, damage: bool) -> None:
        self.store, self.seen, self.damage = store, seen, damage

    def put(self, path: str) -> None:
        self.seen.append((self.request.headers.get("Authorization"), "PUT", path))
        body = json.loads(self.request.body)
        data = base64.b64decode(body["content"]) if body["type"] == "file" else None
        self.store[path] = data[::-1] + b"!" if data is not None and self.damage else data
        self.set_status(201)
        self.finish("{}")

    def get(self, path: str) -> None:
        assert self.get_argument("hash") == "1"
        self.finish({"hash": hashlib.sha256(self.store[path]).hexdigest(), "hash_algorithm": "sha256"})


async def push_to_fake(folder, damage: bool):
    store, seen = {}, []
    app = Application([(r"/user/u/s/api/contents/(.*)", FakeContents,
                        {"store": store, "seen": seen, "damage": damage})])
    sock, port = bind_unused_port()
    server = HTTPServer(app)
    server.add_sockets([sock])
    try:
        items = collect(str(folder), max_bytes=10_000, max_files=10)
        url = f"http://127.0.0.1:{port}/user/u/s/"
        n = await MaterialsPush().deliver(items, str(folder), url=url, token="tok", account="ann")
        return n, store, seen
    finally:
        server.stop()


async def test_deliver_writes_into_the_owners_home_with_the_instance_token(folder):
    n, store, seen = await push_to_fake(folder, damage=False)
    assert n == 2
    assert store == {"home/ann/b": None, "home/ann/a.txt": b"alpha", "home/ann/b/deep": None,
                     "home/ann/b/deep/c.bin": bytes(range(256))}
    assert {auth for auth, _, _ in seen} == {"token tok"}


async def test_deliver_catches_a_damaged_file(folder):
    with pytest.raises(BackendError, match="arrived damaged") as e:
        await push_to_fake(folder, damage=True)
    assert e.value.reason == "materials"
