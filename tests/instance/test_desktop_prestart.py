"""A desktop started before its owner is known (a warm VM's template) and adopted by the owner's
launcher: the owner's settings and environment, nothing secret from before, a clean stop."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.instance.jupyter import descendants, still_alive
from tests.instance.test_desktop_launcher import Launcher, rfb_handshake
from tests.support import wait_for

pytestmark = pytest.mark.root  # starts Xvnc


def test_prestarted_desktop_is_adopted_with_the_owners_settings_and_stops_with_its_launcher(tmp_path: Path):
    control = tmp_path / "prestart"
    template_env = {k: v for k, v in os.environ.items() if not k.startswith("VISA_")}
    template_env.update(TMPDIR=str(tmp_path), HOME=str(tmp_path), VISA_DESKTOP_PRESTART_DIR=str(control))
    daemon = subprocess.Popen([sys.executable, "-m", "visa_instance.desktop_prestart"], env=template_env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=open(tmp_path / "daemon.log", "wb"))
    try:
        wait_for(lambda: (control / "control.sock").exists() or daemon.poll() is not None, 30, "the template desktop")
        assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()
        assert stat.S_IMODE(control.stat().st_mode) == 0o700
        (xvnc,) = [p for p in descendants(daemon.pid) if p.comm == "Xvnc"]
        xargv = Path(f"/proc/{xvnc.pid}/cmdline").read_bytes().decode().split("\0")
        assert "-auth" not in xargv, "a cookie made before the snapshot would be every clone's"
        display = next(a for a in xargv if a.startswith(":"))
        assert stat.S_IMODE(os.stat(f"/tmp/.X11-unix/X{display[1:]}").st_mode) == 0o700

        launcher = Launcher(tmp_path / "owner", VISA_DESKTOP_PRESTART_DIR=str(control), VISA_SCREEN="1024x768",
                            VISA_KEYBOARD="fr", VISA_INSTANCE_NAME="Owner's beamtime", HOME=str(tmp_path))
        launcher.wait_ready(10)
        assert "prestarted desktop adopted" in launcher.log()
        init = rfb_handshake(launcher.socket)
        assert (init.width, init.height) == (1024, 768)
        assert stat.S_IMODE(os.stat(launcher.socket).st_mode) == 0o600
        assert not (control / "control.sock").exists(), "adopted once only"
        env = {**os.environ, "DISPLAY": display}
        query = subprocess.run(["setxkbmap", "-query"], env=env, capture_output=True, text=True)
        assert "fr" in query.stdout, query.stdout
        names = subprocess.run(["xprop", "-root", "_NET_DESKTOP_NAMES"], env=env, capture_output=True)
        assert "Owner's beamtime" in names.stdout.decode()

        def env_of(program: str, child: bool = False) -> dict:
            """The environment of `program` (of its child: the terminal's shell) in the desktop."""
            family = descendants(daemon.pid)
            procs = [p for p in family if p.comm == program]
            if child and len(procs) == 1:
                procs = [p for p in family if Path(f"/proc/{p.pid}/stat").read_text().split()[3] == str(procs[0].pid)]
            if len(procs) != 1:
                return {}
            raw = Path(f"/proc/{procs[0].pid}/environ").read_bytes().split(b"\0")
            return dict(item.decode().split("=", 1) for item in raw if b"=" in item)
        # the template's terminal runs the owner's shell; its file manager is replaced by the owner's
        for program, child in (("xterm", True), ("pcmanfm", False)):
            wait_for(lambda p=program, c=child: env_of(p, c).get("VISA_INSTANCE_NAME") == "Owner's beamtime", 10,
                     f"the owner's {program}")
        label = next(Path(tmp_path).glob("visa-desktop-*/session/label")).read_text().splitlines()
        assert label[-1] == "Owner's beamtime", label  # the panel's label (tint2 follows the file)
        # the kept panel and window manager run the menu's programs in the owner's environment
        env_file = control / "env.json"
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        assert json.loads(env_file.read_text())["VISA_INSTANCE_NAME"] == "Owner's beamtime"

        family = descendants(daemon.pid)
        launcher.proc.send_signal(signal.SIGTERM)
        assert launcher.proc.wait(15) == 0
        assert daemon.wait(15) == 0
        wait_for(lambda: not still_alive(family), 10, "the desktop's processes to exit")
        assert not os.path.exists(launcher.socket) and not env_file.exists()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
