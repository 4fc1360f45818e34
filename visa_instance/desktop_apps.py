"""``python -m visa_instance.desktop_apps <app>``: what the desktop's menu and launchers run.

One place decides how each application starts (program, arguments, folder), from the validated
session settings, so no user text is ever written into a menu file or a shell command. When a
program is not installed (NeXpy and silx come with the instance env's scientific stack) or
dies as it starts, the user gets a window saying so instead of a click that does nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping

from .desktop_adopt import adopted_env
from .desktop_env import DesktopSettings, settings_from_env

NEXUS_SUFFIXES = (".nxs", ".nx5", ".h5", ".hdf5", ".hdf")
EARLY_EXIT_SECONDS = 8.0  # silx view without a Qt dependency dies after ~3 s (TCG: slower)
MAX_FILES = 20  # a proposal with thousands of runs must not make a window per file
# What to tell a user whose instance lacks an application, and where it would come from.
MISSING_HINT = (
    "{label} is not installed in this instance.\n\n"
    "It comes with the instance's scientific software ({where}).\n"
    "Ask your facility's support if you need it."
)


def home_dir() -> str:
    home = os.path.expanduser("~")
    return home if os.path.isdir(home) else "/"


def work_dir(data_dir: str | None) -> str:
    """The proposal's data if it is mounted, else the home: where a new window starts."""
    return data_dir if data_dir and os.path.isdir(data_dir) else home_dir()


def nexus_files(folder: str, limit: int = MAX_FILES) -> list[str]:
    """The NeXus/HDF5 files at the top of the proposal's data, for NeXpy and silx to open."""
    try:
        names = sorted(n for n in os.listdir(folder) if n.lower().endswith(NEXUS_SUFFIXES))
    except OSError:
        return []
    return [os.path.join(folder, n) for n in names[:limit]]


def find_program(name: str, env_bin: str = os.path.dirname(sys.executable)) -> str | None:
    """The instance env's own copy first (its bin/ need not be on PATH), then PATH."""
    candidate = os.path.join(env_bin, name)
    if os.access(candidate, os.X_OK):
        return candidate
    return shutil.which(name)


def command_for(app: str, settings: DesktopSettings, env_bin: str = os.path.dirname(sys.executable),
                data_dir: str | None = None) -> tuple[list[str], str, str]:
    """``(argv, cwd, label)`` of an application; argv[0] may be missing on this machine.
    ``data_dir``: the proposal's data (default ``/data/<proposal>``)."""
    here = work_dir(data_dir or settings.data_dir)
    runs = nexus_files(here) if here != home_dir() else []
    if app == "terminal":
        return (["xterm", "-T", settings.name, "-fa", "DejaVu Sans Mono", "-fs", "11"],
                here, "The terminal")
    if app == "files":
        folders = [home_dir()] + ([here] if here != home_dir() else [])
        return ["pcmanfm", *folders], here, "The file manager"
    if app == "data":
        return ["pcmanfm", here], here, "The file manager"
    if app == "editor":
        return ["mousepad"], here, "The text editor"
    if app == "nexpy":
        return [find_program("nexpy", env_bin) or "nexpy", *runs], here, "NeXpy"
    if app == "silx":
        return [find_program("silx", env_bin) or "silx", "view", *runs], here, "silx view"
    raise KeyError(app)


def missing_message(label: str, program: str, env_bin: str) -> str:
    return MISSING_HINT.format(label=label, where=f"{os.path.basename(program)} in {env_bin}")


def main(argv: list[str] | None = None, env: Mapping[str, str] = os.environ) -> int:
    args = sys.argv[1:] if argv is None else argv
    env_bin = os.path.dirname(sys.executable)
    if len(args) != 1:
        print("usage: python -m visa_instance.desktop_apps APP", file=sys.stderr)
        return 2
    if env is os.environ:  # run by a window manager or panel started before the owner was known
        owner = adopted_env(env)
        os.environ.clear()
        os.environ.update(owner)
    settings = settings_from_env(env)
    try:
        command, cwd, label = command_for(args[0], settings, env_bin)
    except KeyError:
        print(f"unknown application {args[0]!r}", file=sys.stderr)
        return 2
    program = command[0] if os.path.isabs(command[0]) else shutil.which(command[0])
    if program is None or not os.access(program, os.X_OK):
        return tell(label, missing_message(label, command[0], env_bin))
    # wait a little: a program that dies at start (a missing library) must not look like a
    # click that did nothing; its own messages still go to the instance's log
    proc = subprocess.Popen([program, *command[1:]], cwd=cwd, stdin=subprocess.DEVNULL)
    try:
        code = proc.wait(EARLY_EXIT_SECONDS)
    except subprocess.TimeoutExpired:
        return 0  # running: the desktop's launcher (a subreaper) adopts it
    if code == 0:
        return 0
    return tell(label, f"{label} stopped as it started (exit status {code}).\n\n"
                "The instance's log has its messages; ask your facility's support.")


def tell(label: str, message: str) -> int:
    """Show ``message`` in a window (and on stderr); exit status 1."""
    print(message, file=sys.stderr)
    if shutil.which("xmessage"):
        os.execvp("xmessage", ["xmessage", "-center", "-title", label, "-buttons", "OK:0", message])
    return 1


if __name__ == "__main__":
    sys.exit(main())
