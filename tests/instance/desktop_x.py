"""The desktop a test's jupyter server started: its launcher, its X display (clipboard with xclip)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.instance.jupyter import JupyterServer, descendants


def launcher_of(server: JupyterServer) -> list:
    def is_launcher(pid: int) -> bool:
        try:
            return b"visa_instance.desktop_launcher" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False

    return [p for p in descendants(server.proc.pid) if is_launcher(p.pid)]


class X:
    """The desktop's X display, as the session's own clients see it."""

    def __init__(self, server: JupyterServer) -> None:
        (launcher,) = launcher_of(server)
        argv = Path(f"/proc/{launcher.pid}/cmdline").read_bytes().decode().split("\0")
        self.rfb_socket = argv[argv.index("--socket") + 1]
        (xvnc,) = [p for p in descendants(launcher.pid) if p.comm == "Xvnc"]
        xargv = Path(f"/proc/{xvnc.pid}/cmdline").read_bytes().decode().split("\0")
        display = next(a for a in xargv if a.startswith(":"))
        self.env = {**os.environ, "DISPLAY": display, "XAUTHORITY": xargv[xargv.index("-auth") + 1]}
        self.owners: list[subprocess.Popen] = []

    def copy(self, text: str) -> None:
        """Like Ctrl+C in a desktop application: xclip owns CLIPBOARD until someone else does."""
        proc = subprocess.Popen(["xclip", "-quiet", "-selection", "clipboard", "-i"], env=self.env,
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc.stdin.write(text.encode())
        proc.stdin.close()
        self.owners.append(proc)

    def clipboard(self) -> str:
        r = subprocess.run(["xclip", "-o", "-selection", "clipboard"], env=self.env, capture_output=True, timeout=10)
        return r.stdout.decode() if r.returncode == 0 else ""

    def close(self) -> None:
        for proc in self.owners:
            proc.kill()
            proc.wait()
