"""``visa-instrument-display``: one instrument's PyDM panel, full screen on its own Xvnc.

jupyter-server-proxy starts it per instrument (``instrument-<id>``, see
:mod:`visa_instance.instrument`) and bridges the browser's websocket to ``--socket``, through
the same gated handler as the desktop. It *is* the desktop launcher with another session: same
Xvnc on a unix socket, same readiness (the socket is published once the panel's window is up),
same clean stop of the whole process family. Only what runs on the display differs: openbox
and the panel instead of a terminal.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace

from .desktop_env import settings_from_env
from .desktop_launcher import BACKGROUND, DesktopSession, build_parser, build_setxkbmap_command, configure_logging, run
from .desktop_launcher import log as desktop_log
from .instrument import panel_command, parse_instruments, title

PROG = "visa-instrument-display"


@dataclass
class InstrumentSession(DesktopSession):
    """Xvnc with one full-screen PyDM panel instead of a terminal."""

    instrument: str = ""
    motors: list[str] = field(default_factory=list)

    def client_env(self) -> dict[str, str]:
        env = super().client_env()
        env["XDG_RUNTIME_DIR"] = self.runtime_dir  # Qt's, private (0700) and removed at stop
        return env

    def panel_command(self) -> list[str]:
        return panel_command(sys.executable, self.instrument, self.motors) + ["--fullscreen"]

    def _setup_session(self, deadline: float) -> None:
        self._run_x_client(build_setxkbmap_command(self.settings.keyboard), deadline)
        self._run_x_client(["xsetroot", "-solid", BACKGROUND], deadline)
        self._spawn_client(["openbox", "--sm-disable"])
        self._spawn_client(self.panel_command())
        self._wait_for_window(deadline)


def main(argv: list[str] | None = None) -> int:
    """Run one instrument's display until stopped (exit codes as ``visa-desktop``'s)."""
    parser = build_parser(PROG, __doc__.split("\n")[0])
    parser.add_argument("--instrument", required=True, help="instrument id, the PVs' prefix (D11)")
    parser.add_argument("--motors", default="", help="comma-separated motor axes (DET:Z,SAMPLE:X)")
    args = parser.parse_args(argv)
    configure_logging(PROG, args.debug)
    instruments = parse_instruments(args.instrument, desktop_log)
    if len(instruments) != 1:
        parser.error(f"--instrument {args.instrument!r} is not one instrument id")
    settings = replace(settings_from_env(os.environ, desktop_log), name=title(instruments[0]))
    session = InstrumentSession(
        settings, args.socket, args.timeout,
        instrument=instruments[0], motors=[m for m in args.motors.split(",") if m],
    )
    return run(session, args)


if __name__ == "__main__":
    sys.exit(main())
