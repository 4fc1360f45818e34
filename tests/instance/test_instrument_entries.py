"""Which instrument panels an instance offers, and the entries that open them (pure, fast)."""

from __future__ import annotations

import json
import logging
import os
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from traitlets import TraitError
from traitlets.config import Config, LoggingConfigurable

from visa_instance import instrument
from visa_instance.authorizer import FULL, NONE, VIEW, route_allowed
from visa_instance.desktop_socket import DesktopSocketMixin
from visa_instance.instrument import VisaInstruments, link, parse_instruments
from visa_instance.instrument_page import InstrumentPageHandler, page_routes, socket_routes
from visa_instance.instrument_panel import PANEL_FILE, pydm_argv

PY = "/opt/env/bin/python"


@pytest.fixture(autouse=True)
def _pydm_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in the instance env (the hub venv these tests run in has no PyDM)."""
    monkeypatch.setattr(instrument, "pydm_installed", lambda: True)


@pytest.mark.parametrize("raw, expected", [
    (None, []),
    ("", []),
    (" , ,", []),
    ("D11", ["D11"]),
    ("D11,IN5", ["D11", "IN5"]),
    (" IN5 , D11 ", ["IN5", "D11"]),
    ("D11,d11,D11", ["D11"]),  # once, first spelling wins
    ("D11,../etc,IN 5,a/b,$(id),IN5", ["D11", "IN5"]),
    ("X" * 33, []),
    ("-D11", []),
])
def test_parse_instruments(raw: str | None, expected: list[str], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "visa_instance.instrument"):
        assert parse_instruments(raw) == expected
    if raw and "/" in raw:
        assert "not an instrument id" in caplog.text


def _config(env: dict[str, str], **traits) -> VisaInstruments:
    old = os.environ.get("VISA_INSTRUMENTS")
    os.environ.pop("VISA_INSTRUMENTS", None)
    os.environ.update(env)
    try:
        config = VisaInstruments(config=Config({"VisaInstruments": traits}))
        assert config.instruments is not None  # the default is read from the environment on first use
        return config
    finally:
        os.environ.pop("VISA_INSTRUMENTS", None)
        if old is not None:
            os.environ["VISA_INSTRUMENTS"] = old


def test_instruments_come_from_the_hub_environment() -> None:
    assert _config({}).instruments == []
    assert _config({"VISA_INSTRUMENTS": ""}).server_processes(PY) == {}
    config = _config({"VISA_INSTRUMENTS": "D11,IN5,XYZ"})
    assert config.panels() == {
        "D11": ["DET:Z", "SAMPLE:X", "SAMPLE:Y"],
        "IN5": ["SAMPLE:ROT", "CHOPPER:PHASE"],
        "XYZ": ["SAMPLE:ROT"],  # not in the table: the default axis
    }
    # configuration wins over the environment, and is validated the same way
    assert _config({"VISA_INSTRUMENTS": "D11"}, instruments=["IN5", "bad/id"]).instruments == ["IN5"]
    assert _config({}, instruments=["D11"], motors={"d11": ["TH"]}).panels() == {"D11": ["TH"]}
    with pytest.raises(TraitError, match="bad axis"):
        _config({}, motors={"D11": ["DET:Z; rm -rf /"]})


def test_no_panel_without_pydm(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The VM image has no GUI yet: listed instruments give no tile there, and a log line says why."""
    monkeypatch.setattr(instrument, "pydm_installed", lambda: False)
    config = _config({"VISA_INSTRUMENTS": "D11"})
    assert config.instruments == ["D11"] and config.server_processes(PY) == {} and config.panels() == {}
    assert "PyDM is not installed" in caplog.text


def test_default_axes_are_the_demo_iocs() -> None:
    """The panel's table and the IOCs' (visa_instruments.model.DEVICES) name the same axes."""
    from visa_instruments.model import DEVICES

    assert instrument.DEFAULT_MOTORS == {i: [m.name for m in t.motors] for i, t in DEVICES.items()}


def test_server_process_per_instrument() -> None:
    processes = _config({"VISA_INSTRUMENTS": "D11"}).server_processes("/env/{x}/python")
    assert list(processes) == ["instrument-d11"]
    process = processes["instrument-d11"]
    assert process["unix_socket"] is True and process["raw_socket_proxy"] is True
    assert process["new_browser_tab"] is True
    assert process["launcher_entry"] == {
        "enabled": True, "title": "Instrument control — D11", "icon_path": instrument.ICON_PATH,
        "path_info": "visa/instrument/D11", "category": "Notebook",
    }
    assert os.path.isfile(process["launcher_entry"]["icon_path"])
    command = process["command"]
    # jupyter-server-proxy str.format()s the command: braces of the path are escaped
    assert command[:3] == ["/env/{{x}}/python", "-m", "visa_instance.instrument_launcher"]
    assert [c.format(unix_socket="/s") for c in command][3:5] == ["--socket", "/s"]
    assert command[command.index("--instrument") + 1] == "D11"
    assert command[command.index("--motors") + 1] == "DET:Z,SAMPLE:X,SAMPLE:Y"


def _serverapp(servers: dict | None = None) -> LoggingConfigurable:
    """Stands for the ServerApp: what link() uses of it is its config."""
    config = Config()
    if servers is not None:
        config.ServerProxy.servers = servers
    return LoggingConfigurable(config=config)


def test_link_adds_only_listed_instruments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    apps = tmp_path / "applications"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    menu = tmp_path / "config" / "openbox" / "menu.xml"
    mine = {"command": ["my-own"]}

    monkeypatch.setenv("VISA_INSTRUMENTS", "IN5,D11")
    app = _serverapp({"other": {"command": ["x"]}, "instrument-in5": mine})
    link(app, PY)
    servers = app.config.ServerProxy.servers
    assert set(servers) == {"other", "instrument-in5", "instrument-d11"}
    assert servers["instrument-in5"] is mine  # a deployment's own entry of that name wins
    assert sorted(p.name for p in apps.iterdir()) == ["visa-instrument-d11.desktop", "visa-instrument-in5.desktop"]
    assert [label for label, _ in menu_items(menu)] == ["Terminal", "Instrument control — IN5", "Instrument control — D11"]

    # the proposal no longer has an experiment on IN5: its tile and launcher go
    monkeypatch.setenv("VISA_INSTRUMENTS", "D11")
    app = _serverapp()
    link(app, PY)
    assert list(app.config.ServerProxy.servers) == ["instrument-d11"]
    assert [p.name for p in apps.iterdir()] == ["visa-instrument-d11.desktop"]

    monkeypatch.setenv("VISA_INSTRUMENTS", "")
    app = _serverapp({"other": {"command": ["x"]}})
    link(app, PY)
    assert list(app.config.ServerProxy.servers) == ["other"]
    assert list(apps.iterdir()) == []
    assert not menu.exists()  # the desktop's own menu again


def xdg_exec_argv(value: str) -> list[str]:
    """An ``Exec`` value as a desktop reads it: string escapes, %-codes, then the XDG spec's
    quoting (inside double quotes a backslash escapes ", `, $ and itself; nothing else quotes)."""
    value = value.replace("\\\\", "\\").replace("%%", "%")
    args: list[str] = []
    current, quoted, started, i = "", False, False, 0
    while i < len(value):
        ch = value[i]
        if quoted and ch == "\\" and value[i + 1:i + 2] in ('"', "`", "$", "\\"):
            current, i = current + value[i + 1], i + 2
            continue
        if ch == '"':
            quoted, started = not quoted, True
        elif ch == " " and not quoted:
            if current or started:
                args.append(current)
            current, started = "", False
        else:
            current += ch
        i += 1
    if current or started:
        args.append(current)
    return args


@pytest.mark.parametrize("python", ["/opt/env/bin/python", "/opt/my env/bin/python", '/o p"t/$HOME/`x`/5%\\/python'])
def test_desktop_entry_runs_the_panel(tmp_path: Path, python: str) -> None:
    (path,) = instrument.write_desktop_entries(str(tmp_path), python, {"D11": ["DET:Z", "SAMPLE:X"]})
    text = Path(path).read_text()
    fields = dict(line.split("=", 1) for line in text.splitlines()[1:])
    assert text.startswith("[Desktop Entry]\n")
    assert fields["Name"] == "Instrument control — D11" and fields["Type"] == "Application"
    assert xdg_exec_argv(fields["Exec"]) == [
        python, "-m", "visa_instance.instrument_panel", "--instrument", "D11", "--motors", "DET:Z,SAMPLE:X",
    ]
    assert os.stat(path).st_mode & 0o777 == 0o755


def menu_items(path: Path) -> list[tuple[str, list[str]]]:
    """(label, argv) of each entry of an openbox menu file, as openbox splits ``<execute>``."""
    ns = {"ob": "http://openbox.org/"}
    root = ET.parse(path).getroot()
    return [(item.get("label"), shlex.split(item.find("ob:action/ob:execute", ns).text))
            for item in root.iterfind("ob:menu/ob:item", ns)]


def test_openbox_menu(tmp_path: Path) -> None:
    menu = tmp_path / "openbox" / "menu.xml"
    python = "/opt/my env/bin/py<thon>"
    assert instrument.write_openbox_menu(str(menu), python, {"D11": ["DET:Z"]})
    assert menu_items(menu) == [
        ("Terminal", ["xterm"]),
        ("Instrument control — D11", [python, "-m", "visa_instance.instrument_panel",
                                      "--instrument", "D11", "--motors", "DET:Z"]),
    ]
    assert not instrument.write_openbox_menu(str(menu), python, {}) and not menu.exists()
    # a menu someone wrote by hand stays theirs
    menu.write_text("<openbox_menu/>")
    assert not instrument.write_openbox_menu(str(menu), python, {"D11": ["DET:Z"]})
    assert not instrument.write_openbox_menu(str(menu), python, {})
    assert menu.read_text() == "<openbox_menu/>"


def test_unwritable_home_is_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert instrument.write_desktop_entries(str(blocker / "applications"), PY, {"D11": ["DET:Z"]}) == []
    assert "could not write the instrument launchers" in caplog.text


def test_panel_command_line() -> None:
    argv = pydm_argv("IN5", ["SAMPLE:ROT", "CHOPPER:PHASE"], fullscreen=True)
    assert argv[-1] == PANEL_FILE and os.path.isfile(PANEL_FILE)
    assert json.loads(argv[argv.index("-m") + 1]) == {"INSTRUMENT": "IN5", "MOTORS": "SAMPLE:ROT,CHOPPER:PHASE"}
    assert {"--fullscreen", "--hide-nav-bar", "--hide-menu-bar", "--hide-status-bar"} <= set(argv)
    assert "--read-only" not in argv and "--read-only" in pydm_argv("IN5", [], read_only=True)


def test_routes() -> None:
    (page,) = page_routes("/user/alice/lab/", ["D11"])
    assert page[0] == "/user/alice/lab/visa/instrument/D11/?" and page[1] is InstrumentPageHandler
    assert page[2]["websocket_path"] == "instrument-d11/"
    assert page[2]["page_vars"]["instrument_title"] == "Instrument control — D11"
    processes = _config({"VISA_INSTRUMENTS": "D11,IN5"}).server_processes(PY)
    routes = socket_routes("/base/", processes)
    assert [r[0] for r in routes] == ["/base/instrument-d11/(.*)", "/base/instrument-in5/(.*)"]
    assert all(issubclass(cls, DesktopSocketMixin) for _, cls, _ in routes)  # the desktop's gate
    assert routes[0][2]["state"] is not routes[1][2]["state"]  # one display process each


@pytest.mark.parametrize("path, view, none", [
    ("visa/instrument/D11", True, False),
    ("visa/instrument/D11/", True, False),
    ("instrument-d11/", True, False),
    ("instrument-d11/websockify", True, False),
    ("visa/instrument/D11/../../api/contents", False, False),
    ("api/contents", False, False),
    ("server-proxy/servers-info", False, False),
])
def test_view_only_members_reach_the_panels_only(path: str, view: bool, none: bool) -> None:
    assert route_allowed(FULL, path)
    assert route_allowed(VIEW, path) is view
    assert route_allowed(NONE, path) is none


@pytest.mark.parametrize("can_write", [True, False])
def test_page_says_read_only_to_view_only_members(can_write: bool) -> None:
    from visa_instance.handlers import _jinja

    html = _jinja.get_template("instrument.html").render(
        title="<b>beam</b>", static_url="/s/", config={"websocketPath": "instrument-d11/"},
        can_write=can_write, instrument="D11", instrument_title="Instrument control — D11",
    )
    assert "<title>Instrument control — D11 – &lt;b&gt;beam&lt;/b&gt;</title>" in html
    assert ("read-only: you cannot write to the instrument" in html) is not can_write
    assert 'id="visa-screen"' in html and "desktop.js" in html  # the desktop page's client
