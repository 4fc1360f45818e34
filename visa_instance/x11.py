"""The X11 side of a desktop, pure or nearly: the Xvnc, setxkbmap and xterm command lines, the
Xauthority record, and the display number and its files in /tmp. Kept apart from the launcher,
which owns processes and signals; these are table-tested on their own (test_desktop_builders).
"""

from __future__ import annotations

import logging
import os
import socket
import struct

from .desktop_env import DesktopSettings, Keyboard

FIRST_DISPLAY = 1
LAST_DISPLAY = 99

log = logging.getLogger("visa_instance.desktop_launcher")


def build_xvnc_command(
    display: int,
    settings: DesktopSettings,
    rfb_socket: str,
    xauthority: str,
    displayfd: int,
    xvnc: str = "Xvnc",
) -> list[str]:
    """The Xvnc command line: RFB on a unix socket only, no X11 over TCP or abstract sockets.

    No VNC password (``-SecurityTypes None``): the socket is private to the sandbox's user and
    every websocket is authenticated by the Jupyter server in front of it. ``-AlwaysShared`` lets
    several viewers share the session. The X display itself is protected by an MIT cookie
    (``xauthority``; empty: none, for a desktop made before its owner is known, whose X socket
    only its uid may open: visa_instance.desktop_prestart).
    """
    auth = ["-auth", xauthority] if xauthority else []
    return [
        xvnc,
        f":{display}",
        "-rfbunixpath", rfb_socket,
        "-rfbunixmode", "0600",
        "-rfbport", "-1",
        "-SecurityTypes", "None",
        "-AlwaysShared",
        "-geometry", settings.geometry,
        "-depth", "24",
        "-desktop", settings.name,
        *auth,
        "-nolisten", "tcp",
        "-nolisten", "local",
        "-displayfd", str(displayfd),
    ]


def build_setxkbmap_command(keyboard: Keyboard) -> list[str]:
    """``setxkbmap -layout fr [-variant azerty]``."""
    cmd = ["setxkbmap", "-layout", keyboard.layout]
    if keyboard.variant:
        cmd += ["-variant", keyboard.variant]
    return cmd


def build_xterm_command(settings: DesktopSettings) -> list[str]:
    """The one visible window: a terminal titled with the instance name."""
    return [
        "xterm",
        "-T", settings.name,
        "-n", settings.name,
        "-fa", "DejaVu Sans Mono",
        "-fs", "11",
        "-geometry", "72x22+40+40",  # the file manager opens at the right (desktop_session)
    ]


def xauthority_entry(display: int, cookie: bytes) -> bytes:
    """One Xauthority record (FamilyWild, any host) for ``:display`` with an MIT cookie."""

    def counted(data: bytes) -> bytes:
        return struct.pack(">H", len(data)) + data

    return (
        struct.pack(">H", 0xFFFF)
        + counted(b"")
        + counted(str(display).encode())
        + counted(b"MIT-MAGIC-COOKIE-1")
        + counted(cookie)
    )


def pick_display(
    tmp_dir: str = "/tmp", first: int = FIRST_DISPLAY, last: int = LAST_DISPLAY,
    skip: frozenset[int] | set[int] = frozenset(),
) -> int:
    """The first display number with neither an X socket nor a lock file in ``tmp_dir``."""
    for n in range(first, last + 1):
        if n in skip:
            continue
        if os.path.exists(f"{tmp_dir}/.X11-unix/X{n}") or os.path.exists(f"{tmp_dir}/.X{n}-lock"):
            continue
        return n
    raise RuntimeError(f"no free X display between :{first} and :{last}")


def ensure_x11_dir(tmp_dir: str = "/tmp") -> None:
    """Create /tmp/.X11-unix (sticky, world-writable) in a sandbox's empty private /tmp.

    Xvnc run by a non-root user would otherwise log an alarming error before coping anyway.
    """
    path = f"{tmp_dir}/.X11-unix"
    if not os.path.isdir(path):
        try:
            os.mkdir(path)
            os.chmod(path, 0o1777)
        except OSError as e:
            log.debug("could not create %s: %s", path, e)


def remove_stale_x_files(display: int, tmp_dir: str = "/tmp") -> None:
    """Remove an X socket nobody listens on (left by a killed Xvnc) and its lock file."""
    path = f"{tmp_dir}/.X11-unix/X{display}"
    try:
        with socket.socket(socket.AF_UNIX) as probe:
            probe.connect(path)
        return  # someone is serving it: not ours to remove
    except FileNotFoundError:
        pass
    except OSError:
        _unlink(path)
    _unlink(f"{tmp_dir}/.X{display}-lock")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
