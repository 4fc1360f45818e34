"""Warm pools without a hub: API bodies, pool matching, adoption records, materials roots, the zygote's protocol."""
from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
from tornado.web import HTTPError

from visa_instance import zygote
from visa_spawner.backends.base import InstanceSpec, Plan
from visa_spawner.backends.sandbox.cgroups import Cgroup
from visa_spawner.backends.sandbox.pool import (
    PoolDefinition,
    PoolError,
    WarmPool,
    _record_adoption,
    adopted_account,
    forget_adoption,
    with_port,
)
from visa_spawner.pool_handlers import parse_body

SMALL = Plan(id="sandbox-small", display_name="Small", backend="sandbox", cpus=1, memory_mb=2048)
LARGE = Plan(id="sandbox-large", display_name="Large", backend="sandbox", cpus=2, memory_mb=8192)


@pytest.mark.parametrize(("raw", "message"), [
    (b"{", "not JSON"),
    (b"[]", "JSON object"),
    (b'{"plan": "sandbox-small"}', "size is a whole number"),
    (b'{"plan": "sandbox-small", "size": true}', "size is a whole number"),
    (b'{"plan": "sandbox-small", "size": 1.5}', "size is a whole number"),
    (b'{"size": 1}', "plan is required"),
    (b'{"plan": 3, "size": 1}', "plan is a string"),
    (b'{"plan": "p", "size": 1, "materials": ["x"]}', "materials is a string"),
    (b'{"plan": "p", "size": 1, "owner": "x"}', "Unknown field(s): owner"),
    (b" " * (64 * 1024 + 1), "too large"),
])
def test_bad_bodies_name_the_problem(raw, message):
    with pytest.raises(HTTPError) as e:
        parse_body(raw)
    assert e.value.status_code == 400 and message in e.value.log_message


def test_good_body_is_typed():
    assert parse_body(b'{"plan": "sandbox-small", "size": 3}') == {
        "plan": "sandbox-small", "proposal": "", "materials": "", "size": 3}


def spec(**kw) -> InstanceSpec:
    base = dict(owner="alice", server_name="course-x", instance_id="alice/course-x", display_name="x",
                proposal="P-1", plan=SMALL, command=("jupyterhub-singleuser",), data_path="/d/P-1",
                materials="/m/x", warm_pool="x")
    return InstanceSpec(**{**base, **kw})


def test_a_pool_serves_only_instances_it_fits():
    pool = PoolDefinition(name="x", plan=SMALL, size=2, proposal="P-1", data_path="/d/P-1", materials="/m/x")
    assert pool.mismatch(spec()) == ""
    assert "plan" in pool.mismatch(spec(plan=LARGE))
    assert "proposal" in pool.mismatch(spec(proposal="P-2"))
    assert "data" in pool.mismatch(spec(data_path="/d/P-2"))
    assert "materials" in pool.mismatch(spec(materials="/m/y"))
    # its sandboxes were started named as the course's servers: another server would get a wrong hostname
    assert pool.hostname == "course-x"
    assert "hostname" in pool.mismatch(spec(server_name="lab-1"))
    assert pool.same_sandboxes(PoolDefinition(name="x", plan=SMALL, size=5, proposal="P-1", data_path="/d/P-1",
                                              materials="/m/x"))
    assert not pool.same_sandboxes(PoolDefinition(name="x", plan=LARGE, size=2, proposal="P-1", data_path="/d/P-1",
                                                  materials="/m/x"))


def test_adoptions_are_recorded_per_instance(tmp_path):
    state = str(tmp_path)
    assert adopted_account(state, "alice", "course-x") == ""
    _record_adoption(state, "alice", "course-x", "visa-pool-abc")
    assert adopted_account(state, "alice", "course-x") == "visa-pool-abc"
    assert adopted_account(state, "bob", "course-x") == ""
    assert (tmp_path / "adopted").stat().st_mode & 0o777 == 0o700
    forget_adoption(state, "alice", "course-x")
    assert adopted_account(state, "alice", "course-x") == ""


def test_materials_must_lie_under_the_roots(tmp_path):
    root, outside = tmp_path / "courses", tmp_path / "elsewhere"
    (root / "c1").mkdir(parents=True)
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    pool = WarmPool(backend=None, materials_roots=[str(root)])
    assert pool.check_materials(str(root / "c1")) == str(root / "c1")
    assert pool.check_materials("") == ""
    for bad in (str(outside), str(root / "escape"), str(root / "c1" / ".." / ".." / "elsewhere"), "/etc"):
        with pytest.raises(PoolError, match="course materials"):
            pool.check_materials(bad)
    with pytest.raises(PoolError, match="not a folder"):
        pool.check_materials(str(root / "missing"))


def test_service_url_takes_the_pooled_port():
    assert with_port("http://127.0.0.1:1234/user/a/s/", 5678) == "http://127.0.0.1:5678/user/a/s/"


def test_zygote_reads_one_request_or_the_end():
    hub, inside = socket.socketpair()
    with hub, inside:
        hub.sendall(json.dumps({"argv": ["jupyterhub-singleuser"], "env": {"HOME": "/h"}, "cwd": "/h"}).encode()
                    + b"\n")
        assert zygote.read_request(inside)["argv"] == ["jupyterhub-singleuser"]
        hub.sendall(b'{"argv": [], "env": {}}\n')
        with pytest.raises(ValueError):
            zygote.read_request(inside)
        hub.sendall(b'{"argv": ["x"], "env": {"A": 1}}\n')
        with pytest.raises(ValueError):
            zygote.read_request(inside)
        hub.close()
        assert zygote.read_request(inside) is None  # the hub went away: the zygote ends


def test_zygote_preloads_the_handlers_an_extension_imports_when_loaded(tmp_path, monkeypatch):
    """An enabled extension's `handlers` module (imported by its load function only, so at adoption
    otherwise) is imported while the sandbox waits in the pool; a broken one is reported, not fatal."""
    for name, handlers in (("visa_fake_lazy", "LOADED = True\n"), ("visa_fake_plain", None),
                           ("visa_fake_broken", "raise RuntimeError('no')\n")):
        package = tmp_path / "lib" / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(
            f"def _jupyter_server_extension_points():\n    return [{{'module': '{name}'}}]\n")
        if handlers is not None:
            (package / "handlers.py").write_text(handlers)
    config = tmp_path / "etc" / "jupyter" / "jupyter_server_config.d"
    config.mkdir(parents=True)
    (config / "fake.json").write_text(json.dumps({"ServerApp": {"jpserver_extensions": {
        "visa_fake_lazy": True, "visa_fake_plain": True, "visa_fake_broken": True, "visa_fake_off": False}}}))
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    monkeypatch.setattr(zygote, "PRELOAD", ())
    for name in ("visa_fake_lazy", "visa_fake_lazy.handlers", "visa_fake_plain", "visa_fake_broken"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    loaded, failed = zygote.preload(str(tmp_path))
    assert loaded == ["visa_fake_lazy", "visa_fake_plain"]
    assert failed == ["visa_fake_broken: RuntimeError"]
    assert sys.modules["visa_fake_lazy.handlers"].LOADED
    assert "visa_fake_plain.handlers" not in sys.modules


def test_zygote_gives_loaded_classes_the_owners_environment():
    """Run in a fresh interpreter: it changes class defaults, as the zygote does once in its life."""
    code = """
import os
os.environ.pop("JUPYTERHUB_SERVICE_PREFIX", None)
os.environ["USER"] = "visa-pool-123"
import jupyter_client.session
from jupyterhub.services.auth import HubAuth, HubOAuth
from visa_instance.zygote import refresh_env_defaults
assert HubOAuth().base_url == "/"
refresh_env_defaults({"JUPYTERHUB_SERVICE_PREFIX": "/user/alice/course-x/", "USER": "alice"})
print(HubOAuth().base_url, HubAuth().base_url, jupyter_client.session.Session().username)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["/user/alice/course-x/", "/user/alice/course-x/", "alice"]


@pytest.mark.parametrize(("version", "file", "weight", "value"), [
    (2, "cpu.weight", 5, "5"), (2, "cpu.weight", 100, "100"),
    (1, "cpu.shares", 5, "51"), (1, "cpu.shares", 100, "1024"), (1, "cpu.shares", 0, "2"),
])
def test_pooled_sandboxes_get_a_low_cpu_weight(tmp_path, version, file, weight, value):
    if version == 2:
        (tmp_path / "cgroup.controllers").touch()
        target = tmp_path / "visahub" / "visa-pool-x"
    else:
        for controller in ("memory", "cpu", "pids"):
            (tmp_path / controller).mkdir()
        target = tmp_path / "cpu" / "visahub" / "visa-pool-x"
    target.mkdir(parents=True)
    Cgroup("visa-pool-x", root=tmp_path).set_cpu_weight(weight)
    assert (target / file).read_text() == value
