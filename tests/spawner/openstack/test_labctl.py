"""The lab launcher's own behaviour, without starting the lab: config files, the venv key, and
process records (a failing service is named with its log; down stops its own groups only)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parents[3] / "lab" / "openstack"


def _lab_module(name: str):
    """lab/openstack/<name>.py by its path: the launcher's modules are scripts beside labctl.py,
    not a package (and `lab` is this directory's lab.py when pytest imports from here)."""
    spec = importlib.util.spec_from_file_location(f"labctl_{name}", LAB / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


lab_config, lab_venv, lab_procs = (_lab_module(n) for n in ("lab_config", "lab_venv", "lab_procs"))
Service, ServiceFailed, group_members, stop_all = (lab_procs.Service, lab_procs.ServiceFailed,
                                                   lab_procs.group_members, lab_procs.stop_all)


def test_configs_bind_loopback_and_put_every_database_on_postgres(tmp_path: Path) -> None:
    lay = lab_config.Layout(root=tmp_path, venv=tmp_path / "venv", password="pw", pg_port=6543)
    files = lab_config.files(lay)
    text = "\n".join(files.values())
    assert "0.0.0.0" not in text and "sqlite" not in text
    for section in (lab_config.nova(lay)["api_database"], lab_config.keystone(lay)["database"]):
        assert section["connection"].startswith("postgresql+psycopg2://postgres@127.0.0.1:6543/")
    assert "password = pw" in files[tmp_path / "etc" / "nova" / "nova.conf"]
    assert "lab-demo:" in files[lay.clouds] and "username: demo" in files[lay.clouds]
    assert files == lab_config.files(lay)  # a second up writes the same bytes


def test_ini_joins_lists() -> None:
    assert lab_config.ini({"a": {"x": ["p", "q"], "y": 1}}) == "[a]\nx = p,q\ny = 1\n"


def test_venv_key_follows_the_lock_and_needs_the_stamp(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("pip==1\nfoo==1\n")
    first = lab_venv.key(lock)
    lock.write_text("pip==1\nfoo==2\n")
    assert lab_venv.key(lock) != first
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for name in lab_venv.NEEDED:
        (venv / "bin" / name).touch()
    assert not lab_venv.is_ready(venv, first)  # no stamp: an interrupted build
    (venv / lab_venv.STAMP).write_text(first + "\n")
    assert lab_venv.is_ready(venv, first) and not lab_venv.is_ready(venv, lab_venv.key(lock))


def test_split_lock_installs_the_installers_first() -> None:
    first, rest = lab_venv.split_lock()
    assert sorted(p.split("==")[0] for p in first) == ["pip", "setuptools", "wheel"]
    assert all("==" in p for p in first + rest) and "nova" in {p.split("==")[0] for p in rest}


def _service(tmp_path: Path, name: str) -> Service:
    for d in ("run", "logs"):
        (tmp_path / d).mkdir(exist_ok=True)
    return Service(tmp_path / "run", tmp_path / "logs", name)


def test_a_service_that_exits_is_named_with_its_log(tmp_path: Path) -> None:
    svc = _service(tmp_path, "nova-api")
    svc.start(["sh", "-c", "echo 'ERROR cannot bind'; exit 3"])
    with pytest.raises(ServiceFailed, match=r"(?s)nova-api exited before it came up.*ERROR cannot bind"):
        svc.wait(lambda: False, timeout=30)


def test_a_service_that_never_answers_times_out_by_name(tmp_path: Path) -> None:
    svc = _service(tmp_path, "glance")
    svc.start(["sh", "-c", "echo starting; exec sleep 60"])
    try:
        with pytest.raises(ServiceFailed, match=r"(?s)glance did not come up within 1 s.*starting"):
            svc.wait(lambda: False, timeout=1)
    finally:
        stop_all([svc])


def test_stop_all_ends_the_whole_group_and_forgets_it(tmp_path: Path) -> None:
    svc = _service(tmp_path, "keystone")
    svc.start(["sh", "-c", "sleep 60 & sleep 60 & wait"])
    pid = svc.pid()
    deadline = time.monotonic() + 10
    while len(group_members(pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(group_members(pid)) == 3
    stop_all([svc], grace=5)
    assert group_members(pid) == [] and not svc.record.exists()


def test_a_reused_pid_is_not_ours(tmp_path: Path) -> None:
    """A record whose pid now has another start time describes another program: never signalled."""
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        svc = _service(tmp_path, "placement")
        svc.record.write_text(json.dumps({"pid": other.pid, "start": -1, "argv": []}))
        assert svc.pid() is None
        stop_all([svc], grace=1)
        assert other.poll() is None  # still running
    finally:
        other.kill()
        other.wait()


def test_down_now_kills_services_that_would_take_their_time(tmp_path: Path) -> None:
    """`labctl down --now` (the tests' teardown): services that ignore SIGTERM end at once, each
    group whole, PostgreSQL by its fast-shutdown signal; nothing recorded is left."""
    names = ["nova-api", "rabbit", "epmd"]
    for name in names:
        _service(tmp_path, name).start(["sh", "-c", "trap '' TERM INT; sleep 60 & wait; sleep 60"])
    pg = _service(tmp_path, "pg")
    # Ends on SIGINT only. SIGINT is set back to its default explicitly: a run started in the
    # background of a non-interactive shell inherits it ignored, and `sh` cannot undo that.
    pg.start([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              "signal.signal(signal.SIGINT, signal.SIG_DFL); time.sleep(60)"])
    pids = [_service(tmp_path, n).pid() for n in [*names, "pg"]]
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, str(LAB / "labctl.py"), "down", "--now"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "OPENSTACK_LAB_DIR": str(tmp_path)}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - t0 < 5, "down --now waited for a grace period"
    assert all(group_members(pid) == [] for pid in pids)
    assert not any((tmp_path / "run").iterdir())
