"""The desktop's dress: openbox, a tint2 panel (menu, launchers, label, clock) and pcmanfm.

Chosen by measured cost (docs/desktop.md): the panel and file manager add a few MiB and a
fraction of a second to the bare openbox session, where LXQt's or Xfce's panels cost 60-110 MiB.
Everything here is a pure builder of config text, so it is tested as strings; the launcher
writes the files into its private runtime directory (nothing in the user's home is changed).

No user text ever reaches a shell or a config parser unquoted: menus and launchers run
``python -m visa_instance.desktop_apps <app>``, which reads the validated settings itself.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from .desktop_env import DesktopSettings
from .instrument import DESKTOP_FILE_PREFIX, exec_quote

SYSTEM_OPENBOX_RC = "/etc/xdg/openbox/rc.xml"
# Icons by file: tint2 loading a whole icon theme (Adwaita) costs ~0.8 s of the desktop's start.
ICON_DIR = "/usr/share/icons/Adwaita/24x24"
PANEL_HEIGHT = 34
# the WM_CLASS instance names of the windows a dressed desktop shows (what readiness waits for)
PANEL_CLASS = "tint2"
FILES_CLASS = "pcmanfm"


@dataclass(frozen=True)
class App:
    """One entry of the menu (and, with ``on_panel``, a panel launcher)."""

    key: str  # argument of visa_instance.desktop_apps
    label: str
    icon: str
    on_panel: bool = True


APPS: tuple[App, ...] = (
    App("terminal", "Terminal", "utilities-terminal"),
    App("files", "Files", "system-file-manager"),
    App("data", "Proposal data", "folder-documents", on_panel=False),
    App("editor", "Text editor", "accessories-text-editor"),
    App("nexpy", "NeXpy", "applications-science"),
    App("silx", "silx view", "image-x-generic"),
)


def label_text(settings: DesktopSettings) -> str:
    """What the panel shows and the desktop is named: the instance, then its proposal."""
    return f"{settings.name} · {settings.proposal}" if settings.proposal else settings.name


def app_command(key: str, python: str = sys.executable) -> list[str]:
    return [python, "-m", "visa_instance.desktop_apps", key]


def desktop_exec(argv: list[str]) -> str:
    """An ``Exec=`` value: each argument quoted by the spec's rules, then the string value's own
    escapes (backslashes doubled) and ``%`` doubled, as the instrument launchers do."""
    line = " ".join(exec_quote(arg) for arg in argv)
    return line.replace("\\", "\\\\").replace("%", "%%")


def icon_file(name: str, icon_dir: str = ICON_DIR) -> str:
    """The icon's PNG in ``icon_dir``'s contexts if there is one, else its name (a theme lookup)."""
    found = sorted(glob.glob(os.path.join(glob.escape(icon_dir), "*", f"{name}.png")))
    return found[0] if found else name


def desktop_entry(app: App, python: str = sys.executable, icon_dir: str = ICON_DIR) -> str:
    """A .desktop file tint2 reads for one panel launcher."""
    return (
        "[Desktop Entry]\nType=Application\n"
        f"Name={app.label}\nIcon={icon_file(app.icon, icon_dir)}\n"
        f"Exec={desktop_exec(app_command(app.key, python))}\n"
    )


def jgmenu_csv(python: str = sys.executable) -> str:
    """The panel's application menu (jgmenu CSV: label, command run by ``sh -c``, icon)."""
    lines = []
    for app in APPS:
        command = shlex.join(app_command(app.key, python))
        if "," in command:
            command = f'"""{command}"""'
        lines.append(f"{app.label},{command},{icon_file(app.icon)}")
    return "\n".join(lines) + "\n"


def jgmenu_rc() -> str:
    return (
        "position_mode = pointer\nfont = DejaVu Sans 10\nicon_size = 22\n"
        "icon_theme = Adwaita\nmenu_width = 220\ncolor_menu_bg = #1b2631 100\n"
        "color_norm_fg = #eeeeee 100\ncolor_sel_bg = #2e6da4 100\ncolor_sel_fg = #ffffff 100\n"
    )


def tint2rc(settings: DesktopSettings, launcher_files: list[str], menu_command: list[str],
            label_file: str | None = None) -> str:
    """Bottom panel: [Applications] [launchers] [windows] [instance · proposal] [clock]; with
    ``label_file`` the label is its last line, read again every 2 s (a prestarted desktop's,
    relabelled when adopted: visa_instance.desktop_prestart), else fixed. Read again rather than
    followed by a ``tail -F`` kept running: nothing to lose across tint2's restarts (SIGUSR1 for the
    owner's launchers, the page's screen resize). Seen on a warm VM: the owner's label within 3 s
    of the panel, in a screenshot where the ``tail -F`` version had shown none yet."""
    launchers = "".join(f"launcher_item_app = {path}\n" for path in launcher_files)
    label = f"""\
button = new
button_text = {_one_line(label_text(settings))}
button_font = DejaVu Sans Bold 10
button_font_color = #ffffff 100
button_padding = 12 4
button_background_id = 0
button_tooltip = Instance and proposal
""" if label_file is None else f"""\
execp = new
execp_command = exec tail -n 1 {shlex.quote(label_file)}
execp_interval = 2
execp_font = DejaVu Sans Bold 10
execp_font_color = #ffffff 100
execp_padding = 12 4
execp_background_id = 0
execp_tooltip = Instance and proposal
"""
    return f"""\
# written by visa-desktop for this session
rounded = 0
border_width = 0
background_color = #1b2631 100
border_color = #000000 0
rounded = 3
border_width = 0
background_color = #2e6da4 100
border_color = #000000 0
background_color_hover = #3b82c4 100

panel_items = PLT{"P" if label_file is None else "E"}C
panel_size = 100% {PANEL_HEIGHT}
panel_margin = 0 0
panel_padding = 4 3 6
panel_background_id = 1
panel_position = bottom center horizontal
panel_layer = top
panel_monitor = all
strut_policy = follow_size
panel_window_name = tint2
disable_transparency = 1
wm_menu = 1
mouse_effects = 1

taskbar_mode = single_desktop
taskbar_name = 0
taskbar_padding = 4 0 4
taskbar_background_id = 0
task_text = 1
task_icon = 1
task_maximum_size = 220 28
task_padding = 6 2 4
task_font = DejaVu Sans 9
task_font_color = #d0d8e0 100
task_active_font_color = #ffffff 100
task_background_id = 0
task_active_background_id = 2
task_tooltip = 1
mouse_left = toggle_iconify
mouse_right = close

launcher_padding = 4 2 6
launcher_background_id = 0
launcher_icon_size = 24
launcher_icon_theme = hicolor
launcher_tooltip = 1
{launchers}
button = new
button_text = Applications
button_lclick_command = {shlex.join(menu_command)}
button_font = DejaVu Sans Bold 10
button_font_color = #ffffff 100
button_padding = 10 4
button_background_id = 2
button_tooltip = Applications

{label}
time1_format = %H:%M
time2_format = %a %d %b
time1_font = DejaVu Sans Bold 10
time2_font = DejaVu Sans 8
clock_font_color = #ffffff 100
clock_padding = 10 0
clock_background_id = 0
clock_tooltip = %A %d %B %Y
"""


def _one_line(text: str) -> str:
    """tint2 reads one ``key = value`` per line: no newlines (clean_name already folds them)."""
    return " ".join(text.split())


def openbox_menu(python: str = sys.executable) -> str:
    """The desktop's right-click menu: the same applications as the panel's."""
    items = "".join(
        f"    <item label={quoteattr(app.label)}><action name=\"Execute\">"
        f"<command>{escape(shlex.join(app_command(app.key, python)))}</command></action></item>\n"
        for app in APPS
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<openbox_menu xmlns="http://openbox.org/3.4/menu">\n'
        f'  <menu id="root-menu" label="Applications">\n{items}  </menu>\n</openbox_menu>\n'
    )


def openbox_rc(system_rc: str, settings: DesktopSettings, menu_path: str,
               user_menu: str | None = None) -> str:
    """The system's rc.xml with one named desktop and our menu file (key bindings kept); a
    ``user_menu`` (e.g. the instrument panels', visa_instance.instrument) is read first, so its
    root menu wins (openbox keeps a menu id's first definition); ours is the panel's anyway."""
    desktops = (
        "<desktops><number>1</number><firstdesk>1</firstdesk>"
        f"<names><name>{escape(label_text(settings))}</name></names>"
        "<popupTime>0</popupTime></desktops>"
    )
    out, n = re.subn(r"<desktops>.*?</desktops>", lambda _: desktops, system_rc, count=1, flags=re.S)
    if not n:
        raise ValueError("openbox rc.xml has no <desktops> section")
    files = ([user_menu] if user_menu else []) + [menu_path]
    menu = "<menu>" + "".join(f"<file>{escape(path)}</file>" for path in files) + "</menu>"
    # the section that lists menu files (the mouse bindings' <menu>root-menu</menu> stay)
    out, n = re.subn(r"<menu>(?:(?!</menu>).)*?<file>.*?</menu>", lambda _: menu, out, count=1,
                     flags=re.S)
    if not n:
        raise ValueError("openbox rc.xml has no <menu> section")
    # the file manager opens at the right, the terminal (the launcher's, 72x22+40+40) at the left
    rule = ('<applications><application name="pcmanfm"><position force="yes">'
            "<x>-40</x><y>40</y></position></application>")
    return out.replace("<applications>", rule, 1)


@dataclass(frozen=True)
class SessionFiles:
    """Paths of the files one session's programs read."""

    openbox_rc: str
    tint2rc: str
    jgmenu_rc: str
    menu_csv: str


def user_files(env: Mapping[str, str] = os.environ) -> tuple[str | None, list[str]]:
    """The user's openbox menu if there is one, and the instrument panels' launchers."""
    home = os.path.expanduser("~")
    config = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    data = env.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share")
    menu = os.path.join(config, "openbox", "menu.xml")
    pattern = os.path.join(glob.escape(os.path.join(data, "applications")), f"{DESKTOP_FILE_PREFIX}*.desktop")
    return (menu if os.path.isfile(menu) else None), sorted(glob.glob(pattern))


def write_session_files(settings: DesktopSettings, runtime_dir: str,
                        system_rc_path: str = SYSTEM_OPENBOX_RC, label_file: str | None = None) -> SessionFiles:
    """Write the configs into ``runtime_dir`` (private to this session, removed at stop);
    ``label_file``: see tint2rc."""
    base = os.path.join(runtime_dir, "session")
    os.makedirs(base, mode=0o700, exist_ok=True)

    def put(name: str, text: str) -> str:
        path = os.path.join(base, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    with open(system_rc_path, encoding="utf-8") as f:
        system_rc = f.read()
    user_menu, instrument_launchers = user_files()
    menu_xml = put("menu.xml", openbox_menu())
    jgmenu_config = put("jgmenurc", jgmenu_rc())
    menu_csv = put("menu.csv", jgmenu_csv())
    launchers = [put(f"{app.key}.desktop", desktop_entry(app)) for app in APPS if app.on_panel]
    menu_command = ["jgmenu", "--simple", f"--config-file={jgmenu_config}", f"--csv-file={menu_csv}"]
    return SessionFiles(
        openbox_rc=put("rc.xml", openbox_rc(system_rc, settings, menu_xml, user_menu)),
        tint2rc=put("tint2rc", tint2rc(settings, launchers + instrument_launchers, menu_command, label_file)),
        jgmenu_rc=jgmenu_config,
        menu_csv=menu_csv,
    )


def session_commands(files: SessionFiles, settings: DesktopSettings,
                     home: str) -> tuple[list[str], list[list[str]]]:
    """The window manager, then the programs to start once it runs: tint2 started before the
    window manager is ready waits ~1 s before mapping its panel (measured)."""
    folders = [home] + ([settings.data_dir] if settings.data_dir and os.path.isdir(settings.data_dir) else [])
    return (
        ["openbox", "--sm-disable", "--config-file", files.openbox_rc],
        [["tint2", "-c", files.tint2rc],
         ["pcmanfm", *folders]],  # tabs: the home, then the proposal's data (shown)
    )
