"""Run one instrument's PyDM panel (``visa_instance/panels/instrument.py``) on ``$DISPLAY``.

Used two ways: full screen on the instrument's own Xvnc, behind the browser tab
(:mod:`visa_instance.instrument_launcher`), and as a window on the instance's desktop from its
``.desktop`` launcher (:mod:`visa_instance.instrument`). PyDM runs in this process, so the
panel's connection log reaches the launcher's stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

PANEL_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "panels", "instrument.py")


def pydm_argv(instrument: str, motors: list[str], fullscreen: bool = False, read_only: bool = False) -> list[str]:
    """PyDM's own command line for the panel: no menus or navigation, the macros as JSON."""
    argv = ["pydm", "--hide-nav-bar", "--hide-menu-bar", "--hide-status-bar", "--log_level", "WARNING"]
    if fullscreen:
        argv.append("--fullscreen")
    if read_only:
        argv.append("--read-only")
    macros = {"INSTRUMENT": instrument, "MOTORS": ",".join(motors)}
    return argv + ["-m", json.dumps(macros), PANEL_FILE]


def panel_env(env: dict[str, str]) -> dict[str, str]:
    """Qt on X11, PyDM's PVAccess through p4p; the hub's EPICS_PVA_* route passes through."""
    out = dict(env)
    out.setdefault("QT_QPA_PLATFORM", "xcb")
    out.setdefault("PYDM_PVA_LIB", "P4P")
    out.setdefault("QT_ACCESSIBILITY", "0")  # no AT-SPI bus in an Xvnc session: no warnings
    out.setdefault("NO_AT_BRIDGE", "1")
    out.setdefault("DBUS_SESSION_BUS_ADDRESS", "disabled:")  # no session bus: none autolaunched
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="visa-instrument-panel", description=__doc__.split("\n")[0])
    parser.add_argument("--instrument", required=True, help="instrument id, the PVs' prefix (D11)")
    parser.add_argument("--motors", default="", help="comma-separated motor axes (DET:Z,SAMPLE:X)")
    parser.add_argument("--fullscreen", action="store_true", help="fill the screen (own display)")
    parser.add_argument("--read-only", action="store_true", help="PyDM's read-only mode")
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[visa-instrument-panel %(levelname)s] %(message)s"))
    panel_log = logging.getLogger("visa_instance.instrument_panel")
    panel_log.addHandler(handler)
    panel_log.setLevel(logging.INFO)
    panel_log.propagate = False
    os.environ.update(panel_env(dict(os.environ)))

    from pydm_launcher.main import main as pydm_main  # Qt is loaded only here

    motors = [m for m in args.motors.split(",") if m]
    sys.argv = pydm_argv(args.instrument, motors, args.fullscreen, args.read_only)
    pydm_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
