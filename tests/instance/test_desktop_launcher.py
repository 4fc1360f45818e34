"""The real launcher: Xvnc on a unix socket, readiness, and a clean stop in every case."""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.instance.jupyter import Proc, descendants, group_members, still_alive
from tests.support import wait_for

pytestmark = pytest.mark.root  # starts Xvnc and the desktop launcher



@pytest.fixture(autouse=True)
def _desktop_programs() -> None:
    """Fail loudly (never skip) when the desktop's Debian packages are missing."""
    missing = [b for b in ("Xvnc", "openbox", "xterm") if not os.path.exists(f"/usr/bin/{b}")]
    assert not missing, f"missing {missing}: run `make setup`"


@dataclass
class ServerInit:
    width: int
    height: int
    name: str


def rfb_handshake(path: str, timeout: float = 10) -> ServerInit:
    """Speak just enough RFB 3.8 (security None, shared) to read the ServerInit message."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(path)
        f = s.makefile("rb")
        assert f.read(12) == b"RFB 003.008\n"
        s.sendall(b"RFB 003.008\n")
        count = f.read(1)[0]
        types = f.read(count)
        assert 1 in types, f"security type None not offered: {list(types)}"
        s.sendall(b"\x01")
        assert struct.unpack(">I", f.read(4))[0] == 0
        s.sendall(b"\x01")  # ClientInit: shared
        width, height = struct.unpack(">HH", f.read(4))
        f.read(16)  # pixel format
        (length,) = struct.unpack(">I", f.read(4))
        return ServerInit(width, height, f.read(length).decode("utf-8", "replace"))


class Launcher:
    """``python -m visa_instance.desktop_launcher`` with its own TMPDIR and socket directory."""

    def __init__(self, tmp: Path, command: list[str] | None = None, **env: str) -> None:
        """``command``: another launcher (the instrument panels'), run with ``--socket`` added."""
        self.tmp = tmp
        self.tmp.mkdir(mode=0o700)
        self.socket = str(tmp / "socket")
        self.log_path = tmp / "launcher.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("VISA_")}
        full_env.update(env, TMPDIR=str(tmp))
        self.proc = subprocess.Popen(
            (command or [sys.executable, "-m", "visa_instance.desktop_launcher"]) + ["--socket", self.socket],
            env=full_env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=open(self.log_path, "wb"),
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 20) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"launcher exited early:\n{self.log()}")
            return os.path.exists(self.socket)

        wait_for(ready, timeout, "the desktop socket")

    @property
    def display(self) -> str:
        return ":" + re.search(r"desktop :(\d+) ready", self.log()).group(1)

    def x_env(self) -> dict[str, str]:
        (auth,) = self.tmp.glob("visa-desktop-*/Xauthority")
        return {**os.environ, "DISPLAY": self.display, "XAUTHORITY": str(auth)}

    def family(self) -> list[Proc]:
        return descendants(self.proc.pid)


@pytest.fixture
def launchers(tmp_path: Path) -> Iterator[list[Launcher]]:
    started: list[Launcher] = []
    yield started
    for launcher in started:
        if launcher.proc.poll() is None:
            launcher.proc.kill()
            launcher.proc.wait()


def start(launchers: list[Launcher], tmp_path: Path, **env: str) -> Launcher:
    launcher = Launcher(tmp_path / f"l{len(launchers)}", **env)
    launchers.append(launcher)
    launcher.wait_ready()
    return launcher


def assert_all_gone(procs: list[Proc], pgid: int, timeout: float = 10) -> None:
    wait_for(lambda: not still_alive(procs) and not group_members(pgid), timeout,
             f"processes to exit: {still_alive(procs) + group_members(pgid)}")


def test_desktop_starts_dressed_and_stops_clean(launchers: list[Launcher], tmp_path: Path) -> None:
    launcher = start(launchers, tmp_path, VISA_SCREEN="1024x768", VISA_KEYBOARD="fr",
                     VISA_INSTANCE_NAME="Beamtime ünicode")
    init = rfb_handshake(launcher.socket)
    assert (init.width, init.height, init.name) == (1024, 768, "Beamtime ünicode")
    assert oct(os.stat(launcher.socket).st_mode & 0o777) == "0o600"

    family = launcher.family()
    names = {p.comm for p in family}
    assert {"Xvnc", "openbox", "tint2", "pcmanfm"} <= names, names
    assert os.getpgid(launcher.proc.pid) == launcher.proc.pid  # its own process group

    env = launcher.x_env()
    query = subprocess.run(["setxkbmap", "-query"], env=env, capture_output=True, text=True)
    assert re.search(r"^layout:\s+fr$", query.stdout, re.M), query.stdout
    names = subprocess.run(["xprop", "-root", "_NET_DESKTOP_NAMES"], env=env, capture_output=True)
    assert '"Beamtime ünicode"' in names.stdout.decode(), "the desktop is not named after the instance"
    # the X display itself refuses clients without the cookie
    anon = subprocess.run(["xdpyinfo"], env={**env, "XAUTHORITY": "/dev/null"},
                          capture_output=True, timeout=10)
    assert anon.returncode != 0

    launcher.proc.send_signal(signal.SIGTERM)
    assert launcher.proc.wait(15) == 0
    assert_all_gone(family, launcher.proc.pid)
    assert not os.path.exists(launcher.socket)
    assert not list(launcher.tmp.glob("visa-desktop-*")), "runtime dir left behind"


def test_bad_env_falls_back_to_defaults(launchers: list[Launcher], tmp_path: Path) -> None:
    launcher = start(launchers, tmp_path, VISA_SCREEN="99999x99999", VISA_KEYBOARD="us;reboot",
                     VISA_PROPOSAL="../../etc")
    init = rfb_handshake(launcher.socket)
    assert (init.width, init.height) == (1280, 720)
    log = launcher.log()
    assert "VISA_SCREEN=" in log and "VISA_KEYBOARD=" in log and "VISA_PROPOSAL=" in log
    query = subprocess.run(["setxkbmap", "-query"], env=launcher.x_env(),
                           capture_output=True, text=True)
    assert re.search(r"^layout:\s+us$", query.stdout, re.M), query.stdout


def test_two_desktops_get_different_displays(launchers: list[Launcher], tmp_path: Path) -> None:
    first = start(launchers, tmp_path)
    second = start(launchers, tmp_path)
    assert first.display != second.display
    assert rfb_handshake(first.socket).width == rfb_handshake(second.socket).width == 1280


def test_xvnc_death_stops_everything(launchers: list[Launcher], tmp_path: Path) -> None:
    launcher = start(launchers, tmp_path)
    family = launcher.family()
    (xvnc,) = [p for p in family if p.comm == "Xvnc"]
    os.kill(xvnc.pid, signal.SIGKILL)
    assert launcher.proc.wait(15) == 1  # non-zero so jupyter-server-proxy restarts it
    assert_all_gone(family, launcher.proc.pid)
    assert not os.path.exists(launcher.socket)
    assert not os.path.exists(f"/tmp/.X11-unix/X{launcher.display[1:]}"), "stale X socket"


def test_killed_launcher_leaves_nothing(launchers: list[Launcher], tmp_path: Path) -> None:
    """Even SIGKILL (no cleanup code runs): children die with their parent (PDEATHSIG)."""
    launcher = start(launchers, tmp_path)
    family = launcher.family()
    launcher.proc.kill()
    launcher.proc.wait()
    assert_all_gone(family, launcher.proc.pid)
