"""The dressed desktop: panel, file manager on the proposal's data, label, menu programs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.instance.jupyter import ARTIFACTS
from tests.instance.test_desktop_launcher import Launcher, launchers  # noqa: F401 (fixture)
from tests.instance.test_instrument_display import UnixSocketFrames
from tests.rfb import RfbClient
from tests.support import wait_for
from visa_instance import desktop_apps
from visa_instance.desktop_env import DesktopSettings
from visa_instance.desktop_launcher import BACKGROUND
from visa_instance.desktop_session import (
    APPS,
    PANEL_HEIGHT,
    desktop_exec,
    jgmenu_csv,
    label_text,
    openbox_menu,
    openbox_rc,
    tint2rc,
    user_files,
)

PROPOSAL = "P-2026-011"
NAME = 'Beamtime <b>ünicode</b> "50%"'

# ---------------------------------------------------------------- pure builders


@pytest.mark.parametrize(("argv", "expected"), [
    (["/opt/env/bin/python", "-m", "x"], "/opt/env/bin/python -m x"),
    (["/opt/my env/python"], '"/opt/my env/python"'),
    (['say "hi"'], '"say \\\\"hi\\\\""'),
    (["50%"], "50%%"),
])
def test_desktop_exec_quotes_as_the_spec_says(argv: list[str], expected: str) -> None:
    assert desktop_exec(argv) == expected


def test_builders_carry_no_user_text_but_the_label() -> None:
    settings = DesktopSettings(name=NAME, proposal=PROPOSAL)
    rc = tint2rc(settings, ["/r/terminal.desktop"], ["jgmenu", "--simple"])
    assert f"button_text = {NAME} · {PROPOSAL}\n" in rc
    assert "launcher_item_app = /r/terminal.desktop\n" in rc
    assert NAME not in jgmenu_csv("/py") + openbox_menu("/py")  # menus run desktop_apps
    assert len(jgmenu_csv("/py").splitlines()) == len(APPS)
    assert "<command>/py -m visa_instance.desktop_apps nexpy</command>" in openbox_menu("/py")
    # a newline in the label cannot start a new tint2 setting
    assert "\nmouse_left = x" not in tint2rc(DesktopSettings(name="a\nmouse_left = x"), [], ["m"])


def test_openbox_rc_names_the_desktop_and_keeps_the_bindings() -> None:
    system = Path("/etc/xdg/openbox/rc.xml").read_text()
    rc = openbox_rc(system, DesktopSettings(name=NAME, proposal=PROPOSAL), "/r/menu.xml")
    assert "<name>Beamtime &lt;b&gt;ünicode&lt;/b&gt; \"50%\" · P-2026-011</name>" in rc
    assert "<number>1</number>" in rc and "<file>/r/menu.xml</file>" in rc
    assert '<application name="pcmanfm">' in rc
    assert "debian-menu.xml" not in rc
    assert rc.count("<menu>root-menu</menu>") == system.count("<menu>root-menu</menu>") > 0
    with pytest.raises(ValueError):
        openbox_rc("<openbox_config/>", DesktopSettings(), "/m")
    # the instrument panels' menu (visa_instance.instrument) is read first: its root menu wins
    both = openbox_rc(system, DesktopSettings(), "/r/menu.xml", "/h/.config/openbox/menu.xml")
    assert "<menu><file>/h/.config/openbox/menu.xml</file><file>/r/menu.xml</file></menu>" in both


def test_user_menu_and_instrument_launchers_are_found(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "c"), "XDG_DATA_HOME": str(tmp_path / "d")}
    assert user_files(env) == (None, [])
    (tmp_path / "c" / "openbox").mkdir(parents=True)
    (tmp_path / "c" / "openbox" / "menu.xml").write_text("<openbox_menu/>")
    (tmp_path / "d" / "applications").mkdir(parents=True)
    for name in ("visa-instrument-d11.desktop", "firefox.desktop"):
        (tmp_path / "d" / "applications" / name).write_text("")
    assert user_files(env) == (str(tmp_path / "c" / "openbox" / "menu.xml"),
                               [str(tmp_path / "d" / "applications" / "visa-instrument-d11.desktop")])


def test_apps_start_in_the_data_and_say_when_missing(tmp_path: Path, monkeypatch) -> None:
    settings = DesktopSettings(name=NAME, proposal="no-such-proposal")
    command, cwd, _ = desktop_apps.command_for("terminal", settings, str(tmp_path))
    assert command[:3] == ["xterm", "-T", NAME] and cwd == desktop_apps.home_dir()
    (tmp_path / "nexpy").write_text("#!/bin/sh\n")
    (tmp_path / "nexpy").chmod(0o755)
    assert desktop_apps.command_for("nexpy", settings, str(tmp_path))[0] == [str(tmp_path / "nexpy")]
    data = tmp_path / "data"
    data.mkdir()
    for name in ("b.nxs", "a.h5", "notes.txt"):
        (data / name).write_text("")
    command, cwd, _ = desktop_apps.command_for("silx", settings, str(tmp_path), str(data))
    assert command[1:] == ["view", str(data / "a.h5"), str(data / "b.nxs")] and cwd == str(data)
    with pytest.raises(KeyError):
        desktop_apps.command_for("rm", settings, str(tmp_path))
    message = desktop_apps.missing_message("silx view", "silx", "/opt/env/bin")
    assert "silx view is not installed" in message and "/opt/env/bin" in message
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no xmessage: stderr and exit 1
    monkeypatch.setattr(sys, "executable", str(tmp_path / "empty" / "python"))
    assert desktop_apps.main(["silx"], {}) == 1
    assert desktop_apps.main(["../../bin/sh"], {}) == 2
    broken = tmp_path / "empty"
    broken.mkdir()
    (broken / "nexpy").write_text("#!/bin/sh\nexit 3\n")
    (broken / "nexpy").chmod(0o755)
    assert desktop_apps.main(["nexpy"], {}) == 1  # died as it started: said, not silent
    (broken / "nexpy").write_text("#!/bin/sh\nexit 0\n")
    assert desktop_apps.main(["nexpy"], {}) == 0


# ---------------------------------------------------------------- the real desktop


def x(launcher: Launcher, *args: str) -> str:
    return subprocess.run(list(args), env=launcher.x_env(), capture_output=True, text=True,
                          timeout=10).stdout


def managed(launcher: Launcher) -> dict[str, str]:
    """WM_CLASS instance → window title of each window the window manager manages."""
    out = {}
    for wid in re.findall(r"0x[0-9a-f]+", x(launcher, "xprop", "-root", "_NET_CLIENT_LIST")):
        props = x(launcher, "xprop", "-id", wid, "WM_CLASS", "_NET_WM_NAME", "WM_NAME")
        klass = re.search(r'WM_CLASS\(STRING\) = "([^"]*)"', props)
        title = re.search(r'(?:_NET_WM_NAME|WM_NAME)\([A-Z_]+\) = "(.*)"', props)
        if klass:
            out[klass.group(1)] = title.group(1) if title else ""
    return out


@pytest.mark.root  # Xvnc, and bubblewrap to mount the proposal's data read-only at /data
def test_dressed_desktop_shows_panel_label_and_the_data(launchers: list[Launcher],  # noqa: F811
                                                        tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "run-0001.nxs").write_bytes(b"")
    home = tmp_path / "home"
    home.mkdir()
    bwrap = ["bwrap", "--dev-bind", "/", "/", "--tmpfs", "/data",
             "--ro-bind", str(data), f"/data/{PROPOSAL}", "--",
             sys.executable, "-m", "visa_instance.desktop_launcher"]
    launcher = Launcher(tmp_path / "l", command=bwrap, HOME=str(home), VISA_SCREEN="1280x720",
                        VISA_PROPOSAL=PROPOSAL, VISA_INSTANCE_NAME=NAME)
    launchers.append(launcher)
    launcher.wait_ready()

    windows = managed(launcher)  # published only once both are managed
    assert {"tint2", "pcmanfm", "xterm"} <= set(windows), windows
    assert windows["xterm"].startswith("Beamtime <b>"), "the terminal is titled with the instance name"
    assert windows["pcmanfm"] == PROPOSAL, "the file manager shows the proposal's data"
    names = x(launcher, "xprop", "-root", "_NET_DESKTOP_NAMES")
    assert f'"{label_text(DesktopSettings(name=NAME, proposal=PROPOSAL))}"'.replace('"50%"', '\\"50%\\"') in names, names

    # a menu entry whose program is absent explains itself in a window
    env = {**launcher.x_env(), "VISA_INSTANCE_NAME": NAME}
    subprocess.Popen([sys.executable, "-m", "visa_instance.desktop_apps", "nexpy"], env=env,
                     stderr=subprocess.DEVNULL)
    wait_for(lambda: "xmessage" in managed(launcher), 10, "the 'not installed' message")

    client = RfbClient(UnixSocketFrames(launcher.socket))
    client.screen()
    ARTIFACTS.mkdir(exist_ok=True)
    client.save_png(ARTIFACTS / "desktop-session.png")
    client.close()

    def pixel(px: int, py: int) -> str:
        i = (py * client.width + px) * client.bpp
        return "#%02x%02x%02x" % (client.fb[i + 2], client.fb[i + 1], client.fb[i])

    assert pixel(client.width - 2, client.height - PANEL_HEIGHT // 2) == "#1b2631"  # the panel
    assert pixel(client.width - 2, 2) == BACKGROUND  # the desktop above it
    assert os.path.exists(launcher.socket)
