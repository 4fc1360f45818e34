"""Instrument control beside Lab (issue 18): one PyDM panel per instrument, in its own tab.

The hub passes ``VISA_INSTRUMENTS`` (comma-separated catalogue ids of the instruments on which
this instance's proposal has an experiment, e.g. ``D11``). Per instrument this module gives

* a jupyter-server-proxy server ``instrument-<id>`` (its own Xvnc with PyDM full screen,
  :mod:`visa_instance.instrument_launcher`) with a Lab launcher tile "Instrument control — D11"
  that opens our noVNC page ``visa/instrument/<ID>``;
* an XDG ``.desktop`` launcher in the instance's home, which opens the same panel as a window
  on the instance's desktop.

No listed instrument, no entry. The servers are added to ``c.ServerProxy.servers`` when
the extension is *linked*, which jupyter-server does for every extension before it loads any,
so jupyter-server-proxy (loaded before us) finds them. The websockets are then shadowed by the
desktop's gated handler (:mod:`visa_instance.desktop_socket`): the same role checks and the
same dropping of a view-only member's input as the desktop.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape as xml_escape

from traitlets import Dict, List, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from .desktop import READY_TIMEOUT, ready_timeout, vnc_server_process

log = logging.getLogger("visa_instance.instrument")

ICON_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static", "instrument.svg")
PAGE_PREFIX = "visa/instrument/"
SERVER_PREFIX = "instrument-"
DESKTOP_FILE_PREFIX = "visa-instrument-"
# A catalogue id becomes part of a URL, a process name and a PV prefix: letters, digits, - and _.
_INSTRUMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
# An axis of the EPICS motor record's naming (``DET:Z``), never anything a shell or PV name
# would read as more than one name.
_MOTOR_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:_-]{0,59}$")

# The demo instruments' axes (visa_instruments/model.py DEVICES, the IOCs' contract in
# docs/instrument.md); a facility configures its own in c.VisaInstruments.motors.
DEFAULT_MOTORS: dict[str, list[str]] = {
    "D11": ["DET:Z", "SAMPLE:X", "SAMPLE:Y"],
    "IN5": ["SAMPLE:ROT", "CHOPPER:PHASE"],
}
FALLBACK_MOTORS = ["SAMPLE:ROT"]


def pydm_installed() -> bool:
    """Can this environment run a panel? (found without importing Qt)."""
    import importlib.util

    return importlib.util.find_spec("pydm") is not None


def parse_instruments(value: str | None, logger: logging.Logger | logging.LoggerAdapter = log) -> list[str]:
    """``"D11, IN5"`` → ``["D11", "IN5"]``: valid ids, in order, each once (case-insensitively)."""
    found: list[str] = []
    seen: set[str] = set()
    for raw in (value or "").split(","):
        item = raw.strip()
        if not item:
            continue
        if not _INSTRUMENT_RE.fullmatch(item):
            logger.warning("VISA_INSTRUMENTS: %r is not an instrument id; ignoring it", item[:40])
            continue
        if item.lower() in seen:
            continue
        seen.add(item.lower())
        found.append(item)
    return found


def server_name(instrument: str) -> str:
    """The jupyter-server-proxy name, and so the URL path, of the instrument's panel."""
    return SERVER_PREFIX + instrument.lower()


def page_path(instrument: str) -> str:
    """The page (relative to the base URL) that the launcher tile opens."""
    return PAGE_PREFIX + instrument


def title(instrument: str) -> str:
    return f"Instrument control — {instrument}"


def may_pilot_here(model: Mapping[str, Any], role: str | None, proposal: str, instrument: str) -> bool:
    """May this person's input reach the instrument's panel? Per person, beside the gateway's
    per-instance decision (it grants the instance write while someone in it holds the right).

    A USER member may only when their hub groups (in their identity, from the VISA authenticator)
    say they hold INSTRUMENT_CONTROL on the instance's proposal (`role:instrument_control` and
    `proposal:<id>`) or are the instrument's scientist (`instrument:<id>`); the window's dates are
    the gateway's to check. The owner, support staff and admins: the gateway decides (a refused
    put shows in the panel). GUESTs are view-only already (the room's level).
    """
    if role != "user":
        return True
    groups = {str(g) for g in model.get("groups") or ()}
    return f"instrument:{instrument}" in groups or {"role:instrument_control", f"proposal:{proposal}"} <= groups


def panel_command(python: str, instrument: str, motors: Sequence[str]) -> list[str]:
    """Run the panel (:mod:`visa_instance.instrument_panel`) with this interpreter."""
    return [python, "-m", "visa_instance.instrument_panel", "--instrument", instrument,
            "--motors", ",".join(motors)]


def launcher_command(python: str, instrument: str, motors: Sequence[str],
                     timeout: float = READY_TIMEOUT) -> list[str]:
    """The instrument's display on jupyter-server-proxy's unix socket (``{unix_socket}``)."""
    python = python.replace("{", "{{").replace("}", "}}")  # the list is str.format()ed
    return [
        python, "-m", "visa_instance.instrument_launcher",
        "--socket", "{unix_socket}",
        "--timeout", f"{max(timeout - 2.0, 1.0):g}",
        "--remove-socket-dir",
        "--instrument", instrument,
        "--motors", ",".join(motors),
    ]


def server_process(python: str, instrument: str, motors: Sequence[str],
                   timeout: float = READY_TIMEOUT) -> dict[str, Any]:
    """The ServerProcess configuration of one instrument's panel (as the desktop's)."""
    return vnc_server_process(launcher_command(python, instrument, motors, timeout), timeout, title(instrument),
                              ICON_PATH, page_path(instrument))


_EXEC_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")


def exec_quote(arg: str) -> str:
    """One argument of a desktop entry's ``Exec`` key (the XDG spec's double-quote rules, not a shell's)."""
    if arg and not _EXEC_RESERVED.intersection(arg):
        return arg
    escaped = "".join("\\" + ch if ch in '"`$\\' else ch for ch in arg)
    return f'"{escaped}"'


def desktop_entry(python: str, instrument: str, motors: Sequence[str]) -> str:
    """An XDG desktop entry opening the panel as a window on the instance's desktop."""
    exec_line = " ".join(exec_quote(arg) for arg in panel_command(python, instrument, motors))
    # a string value's own escapes come first: each backslash of the quoted line is written twice
    exec_line = exec_line.replace("\\", "\\\\")
    return (
        "[Desktop Entry]\n"
        "Type=Application\n"
        f"Name={title(instrument)}\n"
        f"Comment=PyDM panel of {instrument}: motors, temperature, shutter, detector, runs\n"
        f"Exec={exec_line.replace('%', '%%')}\n"
        f"Icon={ICON_PATH}\n"
        "Terminal=false\n"
        "Categories=Science;Physics;\n"
    )


def write_desktop_entries(
    directory: str, python: str, panels: Mapping[str, Sequence[str]]
) -> list[str]:
    """Write one ``.desktop`` file per instrument, remove those of instruments no longer listed.

    Returns the paths written. Errors are logged: a read-only home must not stop the server.
    """
    wanted = {
        os.path.join(directory, f"{DESKTOP_FILE_PREFIX}{instrument.lower()}.desktop"):
            desktop_entry(python, instrument, motors)
        for instrument, motors in panels.items()
    }
    try:
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            if name.startswith(DESKTOP_FILE_PREFIX) and name.endswith(".desktop") and path not in wanted:
                os.unlink(path)
        for path, text in wanted.items():
            tmp = f"{path}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(tmp, 0o755)  # desktops launch only executable entries from a user's home
            os.replace(tmp, path)
    except OSError as e:
        log.warning("could not write the instrument launchers in %s: %s", directory, e)
        return []
    return sorted(wanted)


OPENBOX_MENU_MARK = "<!-- written by visa_instance.instrument: rewritten when the instruments change -->"


def openbox_menu(python: str, panels: Mapping[str, Sequence[str]]) -> str:
    """The desktop's right-click menu: a terminal and one entry per instrument panel.

    Openbox reads no ``.desktop`` files; its ``<execute>`` is split like a shell word list (no
    shell runs it), so POSIX quoting, then XML escaping.
    """
    items = [("Terminal", ["xterm"])] + [
        (title(i), panel_command(python, i, motors)) for i, motors in panels.items()
    ]
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        OPENBOX_MENU_MARK,
        '<openbox_menu xmlns="http://openbox.org/">',
        '<menu id="root-menu" label="VISA">',
    ]
    for label, argv in items:
        command = xml_escape(" ".join(shlex.quote(a) for a in argv))
        lines.append(f'  <item label="{xml_escape(label, {chr(34): "&quot;"})}">'
                     f'<action name="Execute"><execute>{command}</execute></action></item>')
    lines += ["</menu>", "</openbox_menu>", ""]
    return "\n".join(lines)


def write_openbox_menu(path: str, python: str, panels: Mapping[str, Sequence[str]]) -> bool:
    """Write the menu while instruments are offered, remove ours when none is; never replace a
    menu someone else wrote. True when the file now is ours."""
    try:
        with open(path, encoding="utf-8") as f:
            ours = OPENBOX_MENU_MARK in f.read(4096)
    except FileNotFoundError:
        ours = None
    except OSError as e:
        log.warning("could not read %s: %s", path, e)
        return False
    try:
        if ours is False:
            log.info("%s is not ours: the instrument panels are not added to the desktop's menu", path)
            return False
        if not panels:
            if ours:
                os.unlink(path)
            return False
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(openbox_menu(python, panels))
        os.replace(tmp, path)
        return True
    except OSError as e:
        log.warning("could not write the desktop's menu %s: %s", path, e)
        return False


class VisaInstruments(LoggingConfigurable):
    """Which instrument panels this instance offers, and what each panel shows."""

    instruments = List(
        Unicode(),
        help="""
        Catalogue ids of the instruments whose control panel this instance offers, e.g.
        ``["D11"]``. Default: ``$VISA_INSTRUMENTS`` (comma-separated), set by the hub to the
        instruments on which the instance's proposal has an experiment. Empty: no panel.
        Invalid ids are logged and ignored.
        """,
    ).tag(config=True)

    @default("instruments")
    def _default_instruments(self) -> list[str]:
        return parse_instruments(os.environ.get("VISA_INSTRUMENTS"), self.log)

    @validate("instruments")
    def _valid_instruments(self, proposal: Any) -> list[str]:
        return parse_instruments(",".join(proposal["value"]), self.log)

    motors = Dict(
        key_trait=Unicode(),
        value_trait=List(Unicode()),
        help="""
        Per instrument id, the motor axes the panel shows (PVs ``<ID>:<axis>.VAL/.RBV/.DMOV``).
        An instrument not listed gets ``["SAMPLE:ROT"]``. Default: the demo IOCs' axes (D11:
        DET:Z, SAMPLE:X, SAMPLE:Y; IN5: SAMPLE:ROT, CHOPPER:PHASE).
        """,
    ).tag(config=True)

    @default("motors")
    def _default_motors(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in DEFAULT_MOTORS.items()}

    @validate("motors")
    def _valid_motors(self, proposal: Any) -> dict[str, list[str]]:
        for instrument, axes in proposal["value"].items():
            bad = [axis for axis in axes if not _MOTOR_RE.fullmatch(axis)]
            if bad or not axes:
                raise TraitError(f"VisaInstruments.motors[{instrument!r}]: bad axis names {bad or axes}")
        return proposal["value"]

    desktop_entries_dir = Unicode(
        help="""
        Where the ``.desktop`` launchers are written (one per instrument; stale ones removed).
        Default: ``$XDG_DATA_HOME/applications`` (``~/.local/share/applications``). Empty: none.
        """,
    ).tag(config=True)

    @default("desktop_entries_dir")
    def _default_desktop_entries_dir(self) -> str:
        data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
        return os.path.join(data_home, "applications")

    openbox_menu = Unicode(
        help="""
        The desktop's (openbox) right-click menu, written with a terminal and one entry per
        instrument panel while instruments are offered, removed when none is; a menu file
        someone else wrote is left alone. Default: ``$XDG_CONFIG_HOME/openbox/menu.xml``
        (``~/.config/openbox/menu.xml``). Empty: never written.
        """,
    ).tag(config=True)

    @default("openbox_menu")
    def _default_openbox_menu(self) -> str:
        config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
        return os.path.join(config_home, "openbox", "menu.xml")

    def panels(self) -> dict[str, list[str]]:
        """``{instrument id: motor axes}`` for each instrument offered, in order.

        None where PyDM is not installed (the VM image has no GUI yet): a tile that opens a
        panel that cannot start would be worse than no tile.
        """
        if self.instruments and not pydm_installed():
            self.log.warning("Instruments %s listed but PyDM is not installed here: no instrument panel",
                             ", ".join(self.instruments))
            return {}
        table = {k.lower(): v for k, v in self.motors.items()}
        return {i: list(table.get(i.lower(), FALLBACK_MOTORS)) for i in self.instruments}

    def server_processes(self, python: str) -> dict[str, dict[str, Any]]:
        """``c.ServerProxy.servers`` entries, one per instrument offered."""
        timeout = ready_timeout()
        return {server_name(i): server_process(python, i, motors, timeout) for i, motors in self.panels().items()}


def link(serverapp: Any, python: str) -> VisaInstruments:
    """Add the panels to jupyter-server-proxy's configuration and write the desktop launchers."""
    config = VisaInstruments(parent=serverapp)
    servers = dict(serverapp.config.ServerProxy.get("servers") or {})
    for name, process in config.server_processes(python).items():
        servers.setdefault(name, process)  # a deployment's own entry of that name wins
    serverapp.config.ServerProxy.servers = servers
    panels = config.panels()
    if config.desktop_entries_dir:
        write_desktop_entries(config.desktop_entries_dir, python, panels)
    if config.openbox_menu:
        write_openbox_menu(config.openbox_menu, python, panels)
    return config
