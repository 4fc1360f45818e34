"""``visa-desktop``: one X desktop (TigerVNC + openbox + tint2 + pcmanfm) served on a unix socket.

jupyter-server-proxy starts this once per single-user server and bridges the browser's websocket
to ``--socket``. The socket is only published (renamed into place) once the desktop has a
keyboard layout, a background, its panel and its file manager, so jupyter-server-proxy's readiness check
("can I connect?") means "the desktop is ready" and the first viewer never sees a black screen.

This process owns its session: on SIGTERM/SIGINT/SIGHUP, when its parent dies, or when Xvnc
exits, it terminates every process it started (and their descendants) and removes its files.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import _procs
from .desktop_adopt import adopt_prestarted, serve_adopted
from .desktop_env import DesktopSettings, settings_from_env
from .desktop_session import FILES_CLASS, PANEL_CLASS, session_commands, write_session_files
from .x11 import (  # noqa: F401 - re-exported: the instrument launcher, the prestart and tests use them here
    FIRST_DISPLAY,
    LAST_DISPLAY,
    _unlink,
    build_setxkbmap_command,
    build_xterm_command,
    build_xvnc_command,
    ensure_x11_dir,
    pick_display,
    remove_stale_x_files,
    xauthority_entry,
)

log = logging.getLogger("visa_instance.desktop_launcher")

BACKGROUND = "#1f4e79"
XVNC_ATTEMPTS = 3


class Stop(Exception):
    """Raised from the signal handler to unwind into the cleanup."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# ---------------------------------------------------------------- the session


def _child_setup() -> None:
    """In each child before exec: die if the launcher is killed outright (SIGKILL)."""
    _procs.die_with_parent(signal.SIGTERM)


@dataclass
class DesktopSession:
    """Xvnc plus the X clients of one desktop, and the files they need."""

    settings: DesktopSettings
    socket_path: str
    timeout: float = 20.0
    display: int | None = None
    xvnc: subprocess.Popen | None = None
    runtime_dir: str = ""
    x_cookie: bool = True  # False: no MIT cookie (see build_xvnc_command)
    _published: bool = False
    _clients: list[subprocess.Popen] = field(default_factory=list)

    @property
    def staging_socket(self) -> str:
        """Where Xvnc listens until the desktop is ready (same directory, so rename is atomic)."""
        return os.path.join(os.path.dirname(self.socket_path), f".staging-{os.getpid()}")

    @property
    def xauthority(self) -> str:
        return os.path.join(self.runtime_dir, "Xauthority")

    def client_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DISPLAY"] = f":{self.display}"
        if self.x_cookie:
            env["XAUTHORITY"] = self.xauthority
        else:
            env.pop("XAUTHORITY", None)
        if not (env.get("LANG") or env.get("LC_ALL")):
            env["LANG"] = "C.UTF-8"  # a UTF-8 terminal and titles, whatever the server had
        return env

    # -- start

    def start(self) -> None:
        """Start Xvnc, dress the desktop, then publish the socket."""
        deadline = time.monotonic() + self.timeout
        self.runtime_dir = tempfile.mkdtemp(prefix="visa-desktop-")
        self._start_xvnc(deadline)
        self._setup_session(deadline)
        os.rename(self.staging_socket, self.socket_path)
        self._published = True
        log.info("desktop :%s ready on %s (%s, keyboard %s)", self.display,
                 self.socket_path, self.settings.geometry, self.settings.keyboard)

    def _start_xvnc(self, deadline: float) -> None:
        tried: set[int] = set()
        ensure_x11_dir()
        for _ in range(XVNC_ATTEMPTS):
            display = pick_display(skip=tried)
            tried.add(display)
            if self.x_cookie:
                with open(self.xauthority, "wb", opener=lambda p, f: os.open(p, f, 0o600)) as f:
                    f.write(xauthority_entry(display, secrets.token_bytes(16)))
            if os.path.lexists(self.staging_socket):
                os.unlink(self.staging_socket)
            read_fd, write_fd = os.pipe()
            cmd = build_xvnc_command(
                display, self.settings, self.staging_socket, self.xauthority if self.x_cookie else "", write_fd
            )
            log.debug("starting %s", cmd)
            try:
                self.xvnc = subprocess.Popen(
                    cmd, pass_fds=(write_fd,), stdin=subprocess.DEVNULL,
                    preexec_fn=_child_setup, cwd=self.runtime_dir,
                )
            finally:
                os.close(write_fd)
            try:
                announced = self._wait_displayfd(read_fd, deadline)
            finally:
                os.close(read_fd)
            if announced is not None and os.path.exists(self.staging_socket):
                self.display = announced
                return
            log.warning("Xvnc did not start on :%d; trying another display", display)
            self._kill(self.xvnc)
        raise RuntimeError(f"Xvnc failed to start after {XVNC_ATTEMPTS} attempts")

    def _wait_displayfd(self, read_fd: int, deadline: float) -> int | None:
        """Xvnc writes its display number once it accepts clients; EOF means it died."""
        data = b""
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([read_fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(read_fd, 64)
            if not chunk:
                return None
            data += chunk
        try:
            return int(data.strip())
        except ValueError:
            return None

    def _run_x_client(self, cmd: list[str], deadline: float) -> None:
        """A short X command (setxkbmap, xsetroot): failures are logged, not fatal."""
        try:
            result = subprocess.run(
                cmd, env=self.client_env(), stdin=subprocess.DEVNULL,
                capture_output=True, timeout=max(1.0, deadline - time.monotonic()),
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            log.warning("%s failed: %s", cmd[0], e)
            return
        if result.returncode != 0:
            log.warning("%s exited with %d: %s", cmd[0], result.returncode,
                        result.stderr.decode(errors="replace").strip()[:300])

    def _spawn_client(self, cmd: list[str], cwd: str | None = None) -> None:
        try:
            self._clients.append(subprocess.Popen(
                cmd, env=self.client_env(), stdin=subprocess.DEVNULL,
                preexec_fn=_child_setup, cwd=cwd or self.runtime_dir,
            ))
        except OSError as e:
            log.warning("could not start %s: %s", cmd[0], e)

    def _setup_session(self, deadline: float) -> None:
        self._run_x_client(build_setxkbmap_command(self.settings.keyboard), deadline)
        self._run_x_client(["xsetroot", "-solid", BACKGROUND], deadline)
        if not shutil.which("tint2"):  # an image without the panel's packages: the bare desktop
            log.warning("tint2 not found: starting the bare openbox + xterm desktop")
            self._spawn_client(["openbox", "--sm-disable"])
            self._spawn_client(build_xterm_command(self.settings), cwd=self._xterm_cwd())
            self._wait_for_window(deadline)
            return
        files = self._session_files()
        home = os.path.expanduser("~")
        window_manager, clients = session_commands(files, self.settings,
                                                   home if os.path.isdir(home) else "/")
        self._spawn_client(window_manager)
        self._wait_for_root_property("_NET_SUPPORTING_WM_CHECK", deadline)
        for cmd in clients + [self._terminal_command()]:  # a terminal ready, as before
            self._spawn_client(cmd, cwd=self._xterm_cwd())
        self._wait_for_window(deadline, {PANEL_CLASS, FILES_CLASS, "xterm"})

    def _session_files(self):
        return write_session_files(self.settings, self.runtime_dir)

    def _terminal_command(self) -> list[str]:
        return build_xterm_command(self.settings)

    def _wait_for_root_property(self, name: str, deadline: float) -> None:
        """Poll until the root window has ``name`` (e.g. the window manager announced itself)."""
        delay = 0.01
        while time.monotonic() < deadline:
            try:
                out = subprocess.run(["xprop", "-root", name], env=self.client_env(),
                                     capture_output=True, timeout=5).stdout
            except (OSError, subprocess.TimeoutExpired):
                return
            if b"window id #" in out:
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _xterm_cwd(self) -> str:
        data_dir = self.settings.data_dir
        if data_dir and os.path.isdir(data_dir):
            return data_dir
        home = os.path.expanduser("~")
        return home if os.path.isdir(home) else self.runtime_dir

    def _managed_classes(self, by_class: bool = True) -> set[str] | None:
        """WM_CLASS instance names of the windows the window manager manages, and ``*`` if it
        manages any (None: xprop failed)."""
        env = self.client_env()

        def xprop(*args: str) -> str:
            return subprocess.run(["xprop", *args], env=env, capture_output=True,
                                  timeout=5).stdout.decode(errors="replace")

        try:
            ids = re.findall(r"0x[0-9a-f]+", xprop("-root", "_NET_CLIENT_LIST"))
            classes = {m.group(1) for wid in (ids if by_class else ())
                       if (m := re.search(r'WM_CLASS\(STRING\) = "([^"]*)"', xprop("-id", wid, "WM_CLASS")))}
        except (OSError, subprocess.TimeoutExpired):
            return None
        return classes | ({"*"} if ids else set())

    def _wait_for_window(self, deadline: float, expected: frozenset[str] | set[str] = frozenset()) -> None:
        """Wait until the window manager manages the ``expected`` windows (any one if empty)."""
        if not shutil.which("xprop"):
            log.info("xprop not found: not waiting for the first window")
            return
        expected = expected or {"*"}
        delay = 0.02
        while time.monotonic() < deadline:
            classes = self._managed_classes(by_class=expected != {"*"})
            if classes is None or expected <= classes:
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        log.warning("%s did not appear before the timeout; publishing the desktop anyway",
                    ", ".join(sorted(expected - (self._managed_classes() or set()))))

    # -- run and stop

    def wait(self) -> int:
        """Reap children (adopted orphans too) until Xvnc exits; returns its exit code."""
        assert self.xvnc is not None
        while True:
            pid, status = os.waitpid(-1, 0)
            if pid == self.xvnc.pid:
                self.xvnc.returncode = os.waitstatus_to_exitcode(status)
                return self.xvnc.returncode

    def _kill(self, proc: subprocess.Popen | None) -> None:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop(self, grace: float = 5.0) -> None:
        """Terminate the whole family (SIGTERM, then SIGKILL after ``grace``) and clean up."""
        me = os.getpid()
        pgid = os.getpgid(0) if os.getpgid(0) == me else None
        victims = _procs.family(me, pgid)
        if victims:
            log.info("stopping %s", ", ".join(f"{p.comm}[{p.pid}]" for p in victims))
        _procs.signal_all(victims, signal.SIGTERM)
        deadline = time.monotonic() + grace
        delay = 0.01
        while victims and time.monotonic() < deadline:
            _procs.reap_children()
            victims = _procs.family(me, pgid)
            if victims:
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        if victims:
            log.warning("killing %s", ", ".join(f"{p.comm}[{p.pid}]" for p in victims))
            _procs.signal_all(victims, signal.SIGKILL)
            _procs.reap_children()
        if self.display is not None:
            remove_stale_x_files(self.display)
        for path in (self.staging_socket, self.socket_path if self._published else None):
            if path and os.path.lexists(path):
                os.unlink(path)
        if self.runtime_dir:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)


# ---------------------------------------------------------------- entry point


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _raise_stop(signum: int, _frame: object) -> None:
    raise Stop(signum)


def _own_session(parent: int) -> None:
    """Lead a new session and make sure we go down with the Jupyter server."""
    try:
        os.setsid()
    except PermissionError:
        pass  # already a process group leader (e.g. a shell job): our group is still ours
    _procs.die_with_parent(signal.SIGTERM)
    if os.getppid() != parent:
        raise Stop(signal.SIGTERM)  # the parent died before PDEATHSIG was armed
    _procs.become_subreaper()


def build_parser(prog: str = "visa-desktop", description: str = __doc__.split("\n")[0]) -> argparse.ArgumentParser:
    """The options every display launcher takes (the instrument panels' adds its own)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--socket", required=True, help="unix socket path to serve RFB on")
    parser.add_argument("--timeout", type=float, default=18.0, help="start-up deadline, seconds")
    parser.add_argument(
        "--remove-socket-dir", action="store_true",
        help="on a requested stop, remove the socket's directory if empty (jupyter-server-proxy "
        "creates one per server and never removes it)",
    )
    parser.add_argument("--debug", action="store_true", help="verbose logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one desktop until stopped; non-zero when Xvnc died by itself (so it gets restarted)."""
    args = build_parser().parse_args(argv)
    configure_logging("visa-desktop", args.debug)
    control = adopt_prestarted(args.socket, dict(os.environ), args.timeout)
    if control is not None:  # a warm VM's desktop, started before its memory snapshot
        return serve_adopted(control, args)
    return run(DesktopSession(settings_from_env(os.environ, log), args.socket, args.timeout), args)


def configure_logging(prog: str, debug: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format=f"[{prog} %(levelname)s] %(message)s", stream=sys.stderr,
    )


def run(session: DesktopSession, args: argparse.Namespace) -> int:
    """Serve ``session`` until stopped, then stop its whole family; the exit code as main's."""
    parent = os.getppid()

    def serve_session() -> int:
        _own_session(parent)
        session.start()
        log.warning("Xvnc exited with status %s; stopping the desktop", session.wait())
        return 1

    code, stopped = serve_until_stopped(serve_session, session.stop)
    if stopped and args.remove_socket_dir:
        try:
            os.rmdir(os.path.dirname(args.socket))
        except OSError:
            pass  # not empty or already gone: not ours to force
    return code


def serve_until_stopped(serve: Callable[[], int], stop: Callable[[], None], what: str = "desktop") -> tuple[int, bool]:
    """Run ``serve`` with SIGTERM/SIGINT/SIGHUP raising Stop, then ``stop`` with them ignored (a second
    signal must not cut the desktop's own stop short): (exit code, whether a signal stopped it)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stop)
    code, stopped = 0, False
    try:
        code = serve()
    except Stop as signalled:
        log.info("received %s; stopping the %s", signalled, what)
        stopped = True
    except Exception:
        log.exception("%s failed", what)
        code = 1
    finally:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        stop()
    return code, stopped


if __name__ == "__main__":
    sys.exit(main())
