"""jupyter-server-proxy entry point for the desktop (``jupyter_serverproxy_servers: desktop``).

jupyter-server-proxy supervises ``visa-desktop`` and bridges the websocket at ``{base_url}desktop/``
to its unix socket (``raw_socket_proxy``: no websockify process, no TCP port any other local user
could reach). The Lab launcher tile opens our page (``visa/desktop``, served by
:mod:`visa_instance.extension`), not the bare websocket.

The browser never reaches that raw bridge: `visa_instance.desktop_socket` builds a subclass of
the very handler jupyter-server-proxy makes from this configuration (same launcher, supervision
and socket), which checks the member's role and filters their input, and registers it ahead of
jupyter-server-proxy's route for ``desktop/``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

ICON_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static", "desktop.svg")
PAGE_PATH = "visa/desktop"
# jupyter-server-proxy's readiness budget; the launcher's own deadline is a little shorter so
# that it reports its own failure (and cleans up) before jupyter-server-proxy gives up.
# VISA_DESKTOP_TIMEOUT (set by the hub's backend) raises it where the machine is slow to start
# a desktop, e.g. a VM under TCG emulation.
DEFAULT_READY_TIMEOUT = 20.0


def ready_timeout(env: Mapping[str, str] = os.environ) -> float:
    """The readiness budget in seconds: VISA_DESKTOP_TIMEOUT if it is a sane number, else 20."""
    try:
        value = float(env.get("VISA_DESKTOP_TIMEOUT", DEFAULT_READY_TIMEOUT))
    except ValueError:
        return DEFAULT_READY_TIMEOUT
    return min(max(value, 5.0), 600.0) if value == value else DEFAULT_READY_TIMEOUT


READY_TIMEOUT = ready_timeout()


def launcher_command(timeout: float = READY_TIMEOUT) -> list[str]:
    """Run the launcher with this very interpreter: the instance env's bin/ need not be on PATH."""
    python = sys.executable.replace("{", "{{").replace("}", "}}")  # the list is str.format()ed
    return [
        python, "-m", "visa_instance.desktop_launcher",
        "--socket", "{unix_socket}",
        "--timeout", f"{max(timeout - 2.0, 1.0):g}",
        "--remove-socket-dir",
    ]


def setup_desktop() -> dict[str, Any]:
    """The ServerProcess configuration jupyter-server-proxy reads through its entry point.

    Readiness: for ``raw_socket_proxy`` servers jupyter-server-proxy 4.6 replaces its HTTP GET
    check with a bare connect to the socket. The launcher only renames the socket into place once
    the desktop is dressed, so "connectable" means "ready".
    """
    timeout = ready_timeout()
    return vnc_server_process(launcher_command(timeout), timeout, "Desktop", ICON_PATH, PAGE_PATH)


def vnc_server_process(command: list[str], timeout: float, title: str, icon_path: str,
                       page_path: str) -> dict[str, Any]:
    """A ServerProcess for an Xvnc session on a unix socket (the desktop, an instrument panel):
    proxied raw (RFB over the websocket), opened in its own tab from its page, with a Lab tile."""
    return {
        "command": command,
        "unix_socket": True,
        "raw_socket_proxy": True,
        "timeout": timeout,
        "new_browser_tab": True,
        "launcher_entry": {
            "enabled": True,
            "title": title,
            "icon_path": icon_path,
            "path_info": page_path,
            "category": "Notebook",
        },
    }
