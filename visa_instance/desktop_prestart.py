"""A VM's desktop started before its warm-start snapshot, handed to the owner after the restore.

Why: under TCG a warm clone's desktop took 14-19 s to start after Lab answered (measured inside a
clone: Python and the launcher 1-1.4 s, Xvnc 1.8-2.6 s, openbox 0.6-1.2 s, tint2 + pcmanfm +
xterm 10-13 s, emulated CPU for the most part). So the template VM starts it: the boot agent
runs ``python -m visa_instance.desktop_prestart`` as the uid the owner's account will get (the
first account the start script makes; no account has it yet) before it waits for its config.
This daemon starts Xvnc and the whole session with neutral settings, then listens on
``<dir>/control.sock`` (``<dir>`` 0700: only that uid may connect). After the restore the owner's
``visa-desktop``, started by jupyter-server-proxy as always, finds the socket and sends one line
``{"socket": <the path jupyter-server-proxy chose>, "env": <its environment>}``; the daemon

- takes that environment for every program it starts from then on, and writes it to
  ``<dir>/env.json`` (0600): the template's terminal runs a program waiting for that file, which
  then becomes the owner's shell (in the proposal's data, titled with the instance's name), and
  the menu and panel launchers of the kept window manager and panel run programs with it
  (``visa_instance.desktop_apps``);
- applies the owner's settings: keyboard, screen size, the desktop's name, and the panel's label,
  which follows a file (a tint2 executor) so the panel is not restarted (it is, with openbox's
  config, when the owner has a menu or instrument launchers of their own);
- publishes at once, by moving its VNC socket to the path it was given, then replaces the
  template's file manager by the owner's (its GTK start, ~10 s of emulated CPU, follows);
- answers ``{"ready": true}`` and keeps the connection: either end closing it stops the desktop.

Nothing secret is made before the snapshot, so no two clones share one: the X display has no
cookie and its socket is 0700 (only the owner's uid, and root, may connect), the VNC socket has
no password and ends in jupyter-server-proxy's private per-server directory, and everything of
the owner arrives after the restore. Used once: a second desktop of the same server starts the
ordinary way.
"""
from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import pwd
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from . import desktop_launcher as launcher
from .desktop_adopt import CONTROL, ENV_FILE, ENV_FILE_VAR, MAX_REQUEST, PRESTART_DIR, adopted_env, prestart_dir
from .desktop_env import settings_from_env
from .desktop_session import PANEL_CLASS, _one_line, label_text, user_files, write_session_files

log = logging.getLogger("visa_instance.desktop_prestart")

@dataclass
class PrestartedDesktop(launcher.DesktopSession):
    """A DesktopSession made without its owner, then adopted (one connection on the control socket)."""

    control_dir: str = PRESTART_DIR
    x_cookie: bool = False

    @property
    def staging_socket(self) -> str:
        return os.path.join(self.runtime_dir, "rfb.sock") if self.runtime_dir else ""

    @property
    def label_file(self) -> str:
        return os.path.join(self.runtime_dir, "session", "label")

    def _session_files(self):
        """The panel's label follows a file: the owner's is a line appended, not a panel restart."""
        os.makedirs(os.path.dirname(self.label_file), mode=0o700, exist_ok=True)
        with open(self.label_file, "a", encoding="utf-8") as f:
            f.write(_one_line(label_text(self.settings)) + "\n")
        return write_session_files(self.settings, self.runtime_dir, label_file=self.label_file)

    def _terminal_command(self) -> list[str]:
        """The terminal drawn in the template; its shell is the owner's (see `terminal`)."""
        env_file = os.path.join(self.control_dir, ENV_FILE)
        return launcher.build_xterm_command(self.settings) + [
            "-e", sys.executable, "-m", "visa_instance.desktop_prestart", "--terminal", env_file]

    def start_template(self) -> None:
        """Xvnc and the whole session with the template's (neutral) settings; nothing published."""
        deadline = time.monotonic() + self.timeout
        self.runtime_dir = tempfile.mkdtemp(prefix="visa-desktop-")
        self._start_xvnc(deadline)
        os.chmod(f"/tmp/.X11-unix/X{self.display}", 0o700)  # no cookie: the socket's mode decides
        self._setup_session(deadline)
        log.info("template desktop :%s dressed; waiting for its owner", self.display)

    def adopt(self, socket_path: str, env: dict[str, str]) -> None:
        """The owner's settings and programs, then the socket at ``socket_path``."""
        t0 = time.monotonic()
        deadline = t0 + self.timeout
        before = self.settings
        os.environ.clear()
        os.environ.update(env)  # what client_env() gives every program started from now on
        env_file = os.path.join(self.control_dir, ENV_FILE)
        with open(env_file + ".tmp", "w", opener=lambda p, f: os.open(p, f, 0o600)) as f:
            json.dump(env, f)
        os.replace(env_file + ".tmp", env_file)
        self.settings = settings_from_env(env, log)
        self.socket_path = socket_path
        window_manager, panel, *others = self._clients  # see DesktopSession._setup_session
        if panel.args[0] != "tint2":
            raise RuntimeError("the template desktop has no panel")
        replaced = [proc for proc in others if proc.args[0] == "pcmanfm"]  # the terminal becomes the owner's
        for proc in replaced:
            proc.terminate()
        if self.settings.keyboard != before.keyboard:
            self._run_x_client(launcher.build_setxkbmap_command(self.settings.keyboard), deadline)
        if self.settings.geometry != before.geometry:
            self._run_x_client(["xrandr", "-s", self.settings.geometry], deadline)  # a mode of Xvnc's list
        self._session_files()  # same paths; the panel's label changes now
        if any(user_files()):  # the owner's own menu or instrument launchers: read them
            self._run_x_client(["openbox", "--reconfigure"], deadline)
            panel.send_signal(signal.SIGUSR1)  # tint2 restarts with its config
        # openbox keeps the desktop's name it has (EWMH: pagers own it), so set it as a pager does
        self._run_x_client(["xprop", "-root", "-f", "_NET_DESKTOP_NAMES", "8u", "-set", "_NET_DESKTOP_NAMES",
                            label_text(self.settings)], deadline)
        for proc in replaced:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._clients = [window_manager, panel] + [proc for proc in others if proc not in replaced]
        dressed = time.monotonic() - t0
        home = os.path.expanduser("~")
        folders = [home if os.path.isdir(home) else "/"]
        if self.settings.data_dir and os.path.isdir(self.settings.data_dir):
            folders.append(self.settings.data_dir)
        self._wait_for_window(deadline, {PANEL_CLASS, "xterm"})  # at once, unless the panel restarted
        try:
            os.rename(self.staging_socket, self.socket_path)
        except OSError as e:  # another file system (a TMPDIR of the server's): connect follows a link
            if e.errno != errno.EXDEV:
                raise
            os.symlink(self.staging_socket, self.socket_path)
        self._published = True
        # after: its GTK start (~10 s of emulated CPU under TCG) would delay the terminal and panel
        self._spawn_client(["pcmanfm", *folders], cwd=self._xterm_cwd())
        log.info("desktop :%s adopted: ready on %s (%s, keyboard %s) in %.2f s (settings %.2f s)", self.display,
                 self.socket_path, self.settings.geometry, self.settings.keyboard, time.monotonic() - t0, dressed)


def read_request(conn: socket.socket, uid: int) -> tuple[str, dict[str, str]]:
    """The adopter's one line, checked (ValueError): same uid, a socket path, an environment."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    if int.from_bytes(creds[4:8], sys.byteorder) != uid:
        raise ValueError("another user")
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(65536)
        if not chunk or len(data) > MAX_REQUEST:
            raise ValueError("incomplete request")
        data += chunk
    request = json.loads(data.split(b"\n", 1)[0])
    path, env = request.get("socket"), request.get("env")
    if not isinstance(path, str) or not os.path.isabs(path) or not isinstance(env, dict):
        raise ValueError("a request is {socket: absolute path, env: object}")
    return path, {str(k): str(v) for k, v in env.items()}


def serve(session: PrestartedDesktop) -> int:
    """Template desktop, one adoption, then run until Xvnc exits or the adopter goes."""
    os.makedirs(session.control_dir, mode=0o700, exist_ok=True)
    os.chmod(session.control_dir, 0o700)
    control_path = os.path.join(session.control_dir, CONTROL)
    session.start_template()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.path.lexists(control_path):
        os.unlink(control_path)
    server.bind(control_path)  # exists once the desktop is dressed: the boot agent waits for it
    server.listen(1)
    while True:
        conn, _ = server.accept()
        try:
            conn.settimeout(10)
            path, env = read_request(conn, os.getuid())
            conn.settimeout(None)
            break
        except (OSError, ValueError) as e:
            log.warning("adoption refused: %s", e)
            conn.close()
    server.close()
    os.unlink(control_path)
    try:
        session.adopt(path, env)
    except Exception as e:
        conn.sendall(json.dumps({"error": type(e).__name__}).encode() + b"\n")
        raise
    conn.sendall(b'{"ready": true}\n')
    threading.Thread(target=_stop_when_closed, args=(conn,), daemon=True).start()
    status = session.wait()
    log.warning("Xvnc exited with status %s; stopping the desktop", status)
    return 1


def _stop_when_closed(conn: socket.socket) -> None:
    """The adopter went (jupyter-server-proxy stopped it, or it died): stop like on SIGTERM."""
    try:
        while conn.recv(4096):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def terminal(env_file: str) -> None:
    """The template's terminal program: waits for the owner's environment, then becomes the
    owner's shell in the proposal's data (or the home), titled with the instance's name."""
    while not os.path.exists(env_file):
        time.sleep(0.2)
    env = adopted_env({ENV_FILE_VAR: env_file})
    settings = settings_from_env(env, log)
    home = env.get("HOME", "/")
    for folder in (settings.data_dir, home, "/"):
        if folder and os.path.isdir(folder):
            os.chdir(folder)
            break
    title = "".join(c for c in settings.name if c.isprintable())
    sys.stdout.write(f"\033]0;{title}\007")
    sys.stdout.flush()
    shell = env.get("SHELL") or pwd.getpwuid(os.getuid()).pw_shell or "/bin/sh"
    os.execve(shell, [shell], env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="visa-desktop-prestart", description=__doc__.split("\n")[0])
    parser.add_argument("--terminal", metavar="ENV_FILE", help="run as the template terminal's program")
    parser.add_argument("--dir", default=None, help=f"control directory (default {PRESTART_DIR})")
    parser.add_argument("--timeout", type=float, default=120.0, help="start and adoption deadline, seconds")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    launcher.configure_logging("visa-desktop-prestart", args.debug)
    if args.terminal:
        terminal(args.terminal)
    control_dir = args.dir or prestart_dir()
    os.environ[ENV_FILE_VAR] = os.path.join(control_dir, ENV_FILE)
    session = PrestartedDesktop(settings_from_env(os.environ, log), "", args.timeout, control_dir=control_dir)

    def serve_prestarted() -> int:
        launcher._own_session(os.getppid())
        return serve(session)

    try:
        code, _ = launcher.serve_until_stopped(serve_prestarted, session.stop, "prestarted desktop")
    finally:
        for name in (CONTROL, ENV_FILE):
            try:
                os.unlink(os.path.join(control_dir, name))
            except OSError:
                pass
    return code


if __name__ == "__main__":
    sys.exit(main())
