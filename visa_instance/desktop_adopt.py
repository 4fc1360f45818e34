"""The owner's side of a prestarted desktop (visa_instance.desktop_prestart explains why and how).

Kept apart from the daemon: the launcher and the desktop's applications use these, and the
daemon builds on the launcher.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
from collections.abc import Mapping

from . import _procs

log = logging.getLogger("visa_instance.desktop_launcher")

PRESTART_DIR = "/tmp/.visa-desktop-prestart"
CONTROL = "control.sock"
ENV_FILE = "env.json"
ENV_FILE_VAR = "VISA_DESKTOP_ENV_FILE"  # set in the template's environment (desktop_apps reads it)
MAX_REQUEST = 1 << 20


def prestart_dir(env: Mapping[str, str] = os.environ) -> str:
    return env.get("VISA_DESKTOP_PRESTART_DIR") or PRESTART_DIR


def adopted_env(env: Mapping[str, str]) -> dict[str, str]:
    """The owner's environment as ``desktop_apps`` runs programs with it (``env`` unchanged when
    there is no adopted desktop); a missing or unreadable file changes nothing."""
    path = env.get(ENV_FILE_VAR)
    if not path:
        return dict(env)
    try:
        with open(path, encoding="utf-8") as f:
            owner = json.load(f)
    except (OSError, ValueError):
        return dict(env)
    return {str(k): str(v) for k, v in owner.items()} if isinstance(owner, dict) else dict(env)


def adopt_prestarted(socket_path: str, env: dict[str, str], timeout: float) -> socket.socket | None:
    """Hand ``socket_path`` and ``env`` to a desktop started before the snapshot; the open
    connection when it is ready, None when there is none to adopt (or it failed: then the
    ordinary start follows)."""
    control_path = os.path.join(prestart_dir(env), CONTROL)
    if not os.path.exists(control_path):
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(timeout)
        conn.connect(control_path)
        conn.sendall(json.dumps({"socket": socket_path, "env": env}).encode() + b"\n")
        reply = json.loads(conn.makefile("rb").readline() or b"{}")
    except (OSError, ValueError) as e:
        log.warning("the prestarted desktop could not be adopted (%s): starting one", type(e).__name__)
        conn.close()
        return None
    if not reply.get("ready"):
        log.warning("the prestarted desktop failed (%s): starting one", reply.get("error", "no answer"))
        conn.close()
        return None
    conn.settimeout(None)
    log.info("prestarted desktop adopted on %s", socket_path)
    return conn


class _Stopped(Exception):
    pass


def _stop(signum: int, _frame: object) -> None:
    raise _Stopped(signal.Signals(signum).name)


def serve_adopted(conn: socket.socket, args: argparse.Namespace) -> int:
    """What jupyter-server-proxy supervises for an adopted desktop: 0 after a requested stop (the
    daemon stops the desktop when we close), 1 when the desktop ended by itself."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _stop)
    try:
        _procs.die_with_parent(signal.SIGTERM)
        while conn.recv(4096):
            pass
        log.warning("the desktop ended")
        return 1
    except _Stopped as stop:
        log.info("received %s; stopping the desktop", stop)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(8)  # the daemon's stop: 5 s of grace at most
        try:
            while conn.recv(4096):
                pass
        except OSError:
            pass
        if args.remove_socket_dir:
            try:
                os.rmdir(os.path.dirname(args.socket))
            except OSError:
                pass
        return 0
    finally:
        conn.close()
