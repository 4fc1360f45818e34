"""Pure builders: Xvnc/setxkbmap/xterm command lines, Xauthority, display choice, jsp config."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest
from traitlets.config import Config

from visa_instance import _jupyter_server_extension_points
from visa_instance._procs import read_proc
from visa_instance.desktop import PAGE_PATH, launcher_command, ready_timeout, setup_desktop
from visa_instance.desktop_env import DesktopSettings, Keyboard
from visa_instance.desktop_launcher import (
    build_setxkbmap_command,
    build_xterm_command,
    build_xvnc_command,
    pick_display,
    xauthority_entry,
)
from visa_instance.extension import VisaDesktop
from visa_instance.handlers import desktop_handlers


def _option(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


@pytest.mark.parametrize(
    "display, settings, geometry, name",
    [
        (1, DesktopSettings(), "1280x720", "VISA instance"),
        (7, DesktopSettings(1920, 1080, name="Beamtime D22"), "1920x1080", "Beamtime D22"),
        (42, DesktopSettings(640, 480, name="-geometry 1x1"), "640x480", "-geometry 1x1"),
    ],
)
def test_xvnc_command(display: int, settings: DesktopSettings, geometry: str, name: str) -> None:
    cmd = build_xvnc_command(display, settings, "/tmp/s/sock", "/tmp/r/Xauthority", 5)
    assert cmd[0] == "Xvnc" and cmd[1] == f":{display}"
    assert _option(cmd, "-rfbunixpath") == "/tmp/s/sock"
    assert _option(cmd, "-rfbunixmode") == "0600"
    assert _option(cmd, "-rfbport") == "-1"  # never a TCP port
    assert _option(cmd, "-SecurityTypes") == "None"
    assert "-AlwaysShared" in cmd
    assert _option(cmd, "-geometry") == geometry
    assert _option(cmd, "-desktop") == name  # one argv element, whatever it contains
    assert _option(cmd, "-auth") == "/tmp/r/Xauthority"
    assert _option(cmd, "-displayfd") == "5"
    nolisten = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-nolisten"]
    assert sorted(nolisten) == ["local", "tcp"]
    assert all(isinstance(a, str) for a in cmd)


def test_xvnc_binary_override() -> None:
    cmd = build_xvnc_command(3, DesktopSettings(), "/s", "/a", 4, xvnc="/usr/bin/Xtigervnc")
    assert cmd[0] == "/usr/bin/Xtigervnc"


@pytest.mark.parametrize(
    "keyboard, expected",
    [
        (Keyboard("us"), ["setxkbmap", "-layout", "us"]),
        (Keyboard("fr"), ["setxkbmap", "-layout", "fr"]),
        (Keyboard("us", "intl"), ["setxkbmap", "-layout", "us", "-variant", "intl"]),
    ],
)
def test_setxkbmap_command(keyboard: Keyboard, expected: list[str]) -> None:
    assert build_setxkbmap_command(keyboard) == expected


def test_xterm_command_title() -> None:
    cmd = build_xterm_command(DesktopSettings(name="Run 7; echo hi"))
    assert _option(cmd, "-T") == "Run 7; echo hi"
    assert cmd[0] == "xterm"


@pytest.mark.parametrize("display", [0, 1, 12, 99])
def test_xauthority_entry(display: int) -> None:
    cookie = bytes(range(16))
    entry = xauthority_entry(display, cookie)
    family, = struct.unpack(">H", entry[:2])
    assert family == 0xFFFF  # FamilyWild
    fields, rest = [], entry[2:]
    while rest:
        (n,), rest = struct.unpack(">H", rest[:2]), rest[2:]
        fields.append(rest[:n])
        rest = rest[n:]
    assert fields == [b"", str(display).encode(), b"MIT-MAGIC-COOKIE-1", cookie]


@pytest.mark.parametrize(
    "taken, locks, skip, expected",
    [
        ([], [], set(), 1),
        ([1], [], set(), 2),
        ([], [1], set(), 2),
        ([1, 2], [3], set(), 4),
        ([1], [], {2}, 3),
        ([2], [], set(), 1),
    ],
)
def test_pick_display(
    tmp_path: Path, taken: list[int], locks: list[int], skip: set[int], expected: int
) -> None:
    (tmp_path / ".X11-unix").mkdir()
    for n in taken:
        (tmp_path / ".X11-unix" / f"X{n}").touch()
    for n in locks:
        (tmp_path / f".X{n}-lock").touch()
    assert pick_display(str(tmp_path), skip=skip) == expected


def test_pick_display_none_free(tmp_path: Path) -> None:
    (tmp_path / ".X11-unix").mkdir()
    for n in range(1, 4):
        (tmp_path / ".X11-unix" / f"X{n}").touch()
    with pytest.raises(RuntimeError):
        pick_display(str(tmp_path), first=1, last=3)


def test_setup_desktop_config() -> None:
    config = setup_desktop()
    assert config["unix_socket"] is True  # never a TCP port
    assert config["raw_socket_proxy"] is True
    assert config["timeout"] >= 15
    assert "{unix_socket}" in config["command"]
    assert config["command"][:3] == [sys.executable, "-m", "visa_instance.desktop_launcher"]
    entry = config["launcher_entry"]
    assert entry["title"] == "Desktop"
    assert entry["path_info"] == PAGE_PATH == "visa/desktop"
    assert Path(entry["icon_path"]).read_text().lstrip().startswith("<svg")


def test_setup_desktop_is_a_valid_server_process() -> None:
    from jupyter_server_proxy.config import ServerProcess

    process = ServerProcess(name="desktop", **setup_desktop())
    assert process.launcher_entry.path_info == "visa/desktop"
    assert process.raw_socket_proxy and process.unix_socket is True


def test_launcher_deadline_is_inside_jsp_timeout() -> None:
    cmd = launcher_command(20.0)
    assert float(cmd[cmd.index("--timeout") + 1]) < 20.0


@pytest.mark.parametrize("raw, expected", [
    (None, 20.0), ("120", 120.0), ("1", 5.0), ("100000", 600.0), ("soon", 20.0), ("nan", 20.0),
])
def test_ready_timeout_from_environment(raw: str | None, expected: float) -> None:
    assert ready_timeout({} if raw is None else {"VISA_DESKTOP_TIMEOUT": raw}) == expected


def test_slow_machine_timeout_reaches_jupyter_server_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISA_DESKTOP_TIMEOUT", "120")
    config = setup_desktop()
    assert config["timeout"] == 120.0
    assert float(config["command"][config["command"].index("--timeout") + 1]) == 118.0


def test_extension_points() -> None:
    assert _jupyter_server_extension_points() == [{"module": "visa_instance.extension"}]


def test_routes() -> None:
    routes = desktop_handlers("/user/ada/lab-1/", "/usr/share/novnc", "desktop/")
    patterns = [r[0] for r in routes]
    assert patterns == [
        "/user/ada/lab-1/visa/desktop/?",
        "/user/ada/lab-1/visa/novnc/(.*)",
        "/user/ada/lab-1/visa/static/(.*)",
    ]
    assert routes[1][2]["allowed"] == ("core", "vendor")


@pytest.mark.parametrize(
    "value, expected",
    [("desktop/", "desktop/"), ("/visa/desktop-ws", "visa/desktop-ws")],
)
def test_websocket_path_trait(value: str, expected: str) -> None:
    config = Config()
    config.VisaDesktop.websocket_path = value
    assert VisaDesktop(config=config).websocket_path == expected


@pytest.mark.parametrize("value", ["ws://evil/", "//evil/x", "../other"])
def test_websocket_path_trait_rejects(value: str) -> None:
    config = Config()
    config.VisaDesktop.websocket_path = value
    with pytest.raises(ValueError, match="websocket_path must be a path below the base URL"):
        VisaDesktop(config=config)


def test_read_proc_self() -> None:
    import os

    me = read_proc(os.getpid())
    assert me is not None and me.pid == os.getpid() and me.ppid == os.getppid()
