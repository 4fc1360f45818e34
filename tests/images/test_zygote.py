"""The warm-start zygote (images/agent/visa_zygote.py) with the real start script (cloudinit.START_SCRIPT),
natively: the zygote runs with the instance env's Python (as it does in the image), the start script
in bubblewrap with its own /etc (it writes the keyboard file), as the boot emulator runs it."""
from __future__ import annotations

import json
import os
import select
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.support import free_port
from visa_spawner.backends.guest import cloudinit

ZYGOTE = Path(__file__).resolve().parents[2] / "images" / "agent" / "visa_zygote.py"
INSTANCE_PYTHON = Path(os.environ.get("VISA_INSTANCE_ENV", "/opt/visahub/instance-env")) / "bin" / "python"
# stands in for jupyterhub-singleuser: a script of the instance env's Python that says how it runs
COMMAND = """#!{python}
import json, os, random, socket, sys
state = {{"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "sid": os.getsid(0) == os.getpid(),
         "preloaded": "jupyter_server.serverapp" in sys.modules, "argv": sys.argv[1:], "cwd": os.getcwd(),
         "token": os.environ.get("JUPYTERHUB_API_TOKEN"), "random": random.random(), "pid": os.getpid(),
         "dumpable": os.access("/proc/self/fd", os.R_OK), "nice": os.nice(0),
         "listen_env": sorted(k for k in os.environ if k.startswith("LISTEN_")),
         # a default Jupyter's HubAuth took from the zygote's environment when it was imported
         "hub_base_url": sys.modules["jupyterhub.services.auth"].HubAuth.class_traits()["base_url"].default_value
         if "jupyterhub.services.auth" in sys.modules else None}}
port = int([a for a in sys.argv if a.startswith("--ServerApp.port=")][0].split("=")[1])
srv = socket.create_server(("127.0.0.1", port))
while True:  # "state" -> the state; "exit" -> exit; nothing (the start script's probe) -> next
    conn, _ = srv.accept()
    asked = conn.recv(16)
    state["probed"] = state.get("probed", False) or asked == b""
    if asked == b"state":
        conn.sendall(json.dumps(state).encode())
    conn.close()
    if asked == b"exit":
        sys.exit(int(os.environ.get("EXIT_WITH", "0")))
"""


def start_zygote(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """A zygote started by hand (it binds its socket, then imports)."""
    assert INSTANCE_PYTHON.exists(), f"no instance env at {INSTANCE_PYTHON}: run scripts/setup.sh"
    sock = tmp_path / "run" / "zygote.sock"
    proc = subprocess.Popen([str(INSTANCE_PYTHON), str(ZYGOTE), str(sock)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={"PATH": os.defpath, "LANG": "C.UTF-8"})
    deadline = time.monotonic() + 30
    while not sock.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the zygote never bound its socket"
        time.sleep(0.01)
    return proc, sock


def start_activated_zygote(tmp_path: Path, nice: int) -> tuple[subprocess.Popen, Path]:
    """A zygote as visa-zygote.service starts it: on a socket made before it (fd 3, LISTEN_PID and
    LISTEN_FDS, as systemd's socket activation passes it), at another CPU priority (Nice=)."""
    assert INSTANCE_PYTHON.exists(), f"no instance env at {INSTANCE_PYTHON}: run scripts/setup.sh"
    sock = tmp_path / "run" / "zygote.sock"
    sock.parent.mkdir(mode=0o700)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock))
    sock.chmod(0o600)
    server.listen(4)
    shell = f'LISTEN_PID=$$ LISTEN_FDS=1 exec nice -n {nice} "$0" "$@"'  # the shell's pid is Python's
    proc = subprocess.Popen(["sh", "-c", shell, str(INSTANCE_PYTHON), str(ZYGOTE), str(sock)],
                            preexec_fn=lambda: os.dup2(server.fileno(), 3), pass_fds=[3],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"PATH": os.defpath, "LANG": "C.UTF-8"})
    server.close()
    return proc, sock


@pytest.fixture
def zygote(tmp_path: Path):
    """A zygote that has imported Jupyter, serving a socket in tmp_path."""
    proc, sock = start_zygote(tmp_path)
    ready = json.loads(proc.stdout.readline() or "null") or {}
    yield proc, sock, ready
    if proc.poll() is None:
        proc.kill()
    proc.wait()


@pytest.fixture(autouse=True)
def command_dir(tmp_path: Path):
    """pytest's tmp dirs are root-only: the owner (daemon) must be able to read its command."""
    d = Path(tempfile.mkdtemp(prefix="visa-zygote-", dir="/var/tmp"))
    d.chmod(0o755)
    (tmp_path / "cmd").symlink_to(d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run_start_script(tmp: Path, sock: Path, port: int, **env) -> tuple[subprocess.Popen, dict]:
    command = tmp / "cmd" / "fake-singleuser"
    command.write_text(COMMAND.format(python=INSTANCE_PYTHON))
    command.chmod(0o755)
    config = cloudinit.instance_config(
        owner="daemon", server_name="s1", display_name="S1", proposal="", command=[str(command.resolve())],
        env={"JUPYTERHUB_API_TOKEN": "tok-123", "JUPYTERHUB_SERVICE_PREFIX": "/user/daemon/s1/", **env}, port=port, screen="1280x800", keyboard="us",
        bind_address="127.0.0.1")
    (tmp / "instance.json").write_text(cloudinit.config_json(config))
    (tmp / "instance.json").chmod(0o600)
    (tmp / "visa-start").write_text(cloudinit.START_SCRIPT)
    shutil.copytree("/etc", tmp / "etc", symlinks=True, ignore_dangling_symlinks=True)
    argv = ["bwrap", "--dev-bind", "/", "/", "--bind", str(tmp / "etc"), "/etc", "--proc", "/proc",
            "--unshare-pid", "--die-with-parent",
            "--setenv", "VISA_INSTANCE_CONFIG", str(tmp / "instance.json"),
            "--setenv", "VISA_INSTANCE_LOG", str(tmp / "jupyter.log"),
            "--setenv", "VISA_ZYGOTE_SOCKET", str(sock),
            "/usr/bin/python3", str(tmp / "visa-start")]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True), config


def started(port: int, timeout: float = 60) -> dict:
    """The command's state once the start script has seen it listen (so it counts as started)."""
    deadline = time.monotonic() + timeout
    while not (state := ask(port))["probed"]:
        assert time.monotonic() < deadline, "the start script never probed the port"
        time.sleep(0.1)
    return state


def ask(port: int, what: str = "state", timeout: float = 60) -> dict | None:
    """The command's state (and, with "exit", make it exit)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                c.sendall(what.encode())
                data = b""
                while chunk := c.recv(65536):
                    data += chunk
                return json.loads(data) if what == "state" else None
        except (OSError, ValueError):
            assert time.monotonic() < deadline, f"nothing answered on port {port}"
            time.sleep(0.1)


@pytest.mark.root
def test_zygote_imports_jupyter_and_its_extensions(zygote):
    proc, sock, ready = zygote
    assert ready, proc.stderr.read()
    assert ready["failed"] == [] and ready["modules"] >= 8, ready
    assert sock.exists() and (sock.stat().st_mode & 0o777) == 0o600


@pytest.mark.root
def test_start_script_runs_jupyter_through_the_zygote_as_the_owner(zygote, tmp_path: Path):
    _, sock, ready = zygote
    port = free_port()
    script, _ = run_start_script(tmp_path, sock, port)
    state = started(port)
    daemon = (1, 1)  # `daemon` in Debian's base passwd
    assert (state["uid"], state["gid"], state["groups"]) == (*daemon, []), state
    assert state["preloaded"], "the command ran inside the zygote, with Jupyter already imported"
    assert state["sid"] and state["token"] == "tok-123" and state["cwd"] == "/usr/sbin"
    assert "--ServerApp.port=%d" % port in state["argv"]
    assert state["dumpable"], "after setuid the process can read its own /proc entries"
    # the owner's prefix, not the zygote's "/": else the login cookie goes to every server of the hub
    assert state["hub_base_url"] == "/user/daemon/s1/", state["hub_base_url"]
    ask(port, "exit")
    assert script.wait(60) == 0, script.stderr.read()
    assert not sock.exists(), "one request per zygote"


@pytest.mark.root
def test_the_exit_status_comes_back_through_the_zygote(zygote, tmp_path: Path):
    _, sock, _ = zygote
    port = free_port()
    script, _ = run_start_script(tmp_path, sock, port, EXIT_WITH="7")
    started(port)
    ask(port, "exit")
    assert script.wait(60) == 7


@pytest.mark.root
def test_without_a_zygote_the_start_script_starts_jupyter_itself(tmp_path: Path):
    port = free_port()
    script, _ = run_start_script(tmp_path, tmp_path / "no-zygote.sock", port)
    state = started(port)
    assert state["uid"] == 1 and not state["preloaded"]
    ask(port, "exit")
    assert script.wait(60) == 0


@pytest.mark.root
def test_an_env_var_read_at_import_time_makes_the_zygote_exec(zygote, tmp_path: Path):
    """Modules imported with the template's env would be wrong: the command is exec'd instead."""
    _, sock, _ = zygote
    port = free_port()
    script, _ = run_start_script(tmp_path, sock, port, JUPYTERHUB_SINGLEUSER_APP="notebook")
    state = started(port)
    assert state["uid"] == 1 and not state["preloaded"]
    ask(port, "exit")
    assert script.wait(60) == 0


@pytest.mark.root
def test_a_bad_request_is_refused_and_nothing_runs(zygote):
    proc, sock, _ = zygote
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock))
        s.sendall(b'{"argv": "not a list"}\n')
        assert b"bad request" in s.recv(100)
    assert proc.wait(30) == 2
    assert "bad request" in proc.stderr.read()


@pytest.mark.root
def test_a_start_script_that_asks_during_the_imports_is_served_after_them(tmp_path: Path):
    """A cold boot: the zygote and the start script run at once; the script's request waits in the
    socket's queue until Jupyter is imported, then runs in the zygote."""
    proc, sock = start_zygote(tmp_path)
    try:
        port = free_port()
        script, _ = run_start_script(tmp_path, sock, port)
        importing = not select.select([proc.stdout], [], [], 0)[0]
        state = started(port)
        assert state["uid"] == 1 and state["preloaded"], state
        assert importing, "the zygote was ready before the script asked: the wait was not exercised"
        assert json.loads(proc.stdout.readline())["failed"] == []
        ask(port, "exit")
        assert script.wait(60) == 0, script.stderr.read()
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.root
def test_a_start_script_gone_before_the_imports_end_gets_nothing_run(tmp_path: Path, command_dir: Path):
    """The start script gave up waiting (and starts Jupyter itself): the zygote must not start a
    second one when its imports are done."""
    proc, sock = start_zygote(tmp_path)
    port = free_port()
    command = command_dir / "fake-singleuser"
    command.write_text(COMMAND.format(python=INSTANCE_PYTHON))
    command.chmod(0o755)
    request = json.dumps({"argv": [str(command), f"--ServerApp.port={port}"], "env": {"PATH": os.defpath},
                          "cwd": "/", "uid": 1, "gid": 1}).encode() + b"\n"
    with socket.socket(socket.AF_UNIX) as s, open(os.devnull, "rb") as null:
        s.connect(str(sock))
        socket.send_fds(s, [request], [null.fileno()] * 3)
    assert proc.wait(60) == 1, proc.stderr.read()
    assert "left before the zygote was ready" in proc.stderr.read()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


@pytest.mark.root
def test_under_socket_activation_jupyter_runs_at_normal_priority_without_systemds_variables(tmp_path: Path):
    """visa-zygote.service: systemd's socket, Nice=-10 for the boot; the owner's Jupyter gets neither.
    The boot agent reads the zygote's state from zygote.json beside the socket."""
    proc, sock = start_activated_zygote(tmp_path, nice=-5)
    try:
        status = tmp_path / "run" / "zygote.json"
        port = free_port()
        script, _ = run_start_script(tmp_path, sock, port)  # asks at once: waits in systemd's queue
        state = started(port)
        assert state["preloaded"] and state["uid"] == 1, state
        assert state["nice"] == 0 and state["listen_env"] == [], state
        ready = json.loads(status.read_text())
        assert ready["state"] == "ready" and ready["pid"] == proc.pid and ready["failed"] == [], ready
        assert ready["modules"] >= 8 and stat.S_IMODE(status.stat().st_mode) == 0o600
        ask(port, "exit")
        assert script.wait(60) == 0, script.stderr.read()
    finally:
        proc.kill()
        proc.wait()


def test_extensions_to_preload_follow_the_merged_config(tmp_path: Path):
    """Files are merged in name order like jupyter-server does: visa_instance.json turns notebook_shim off."""
    from visa_instance.zygote import enabled_extensions  # the VM's zygote and the sandboxes' pool share it
    d = tmp_path / "etc/jupyter/jupyter_server_config.d"
    d.mkdir(parents=True)
    (d / "notebook_shim.json").write_text('{"ServerApp": {"jpserver_extensions": {"notebook_shim": true}}}')
    (d / "jupyterlab.json").write_text('{"ServerApp": {"jpserver_extensions": {"jupyterlab": true}}}')
    (d / "visa_instance.json").write_text(
        '{"ServerApp": {"jpserver_extensions": {"visa_instance": true, "notebook_shim": false}}}')
    (d / "broken.json").write_text("{not json")
    assert sorted(enabled_extensions(str(tmp_path))) == ["jupyterlab", "visa_instance"]
