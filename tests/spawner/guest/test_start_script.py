"""The start script (visa_spawner/backends/guest/start_script.py): its pure pieces, tested directly,
and what makes it fit to run alone in a guest (stdlib only, shipped byte for byte).
tests/images/test_zygote.py and the OpenStack boot emulator run it whole."""
from __future__ import annotations

import ast
import json
import pwd
import shlex
import sys
from pathlib import Path

import pytest

from visa_spawner.backends.guest import cloudinit
from visa_spawner.backends.guest import start_script as ss

SCRIPT = Path(ss.__file__)
OWNER = pwd.struct_passwd(("alice", "x", 1500, 1501, "", "/home/alice", "/bin/bash"))
CFG = {
    "command": ["jupyterhub-singleuser", "--debug"], "port": "8888", "keyboard": "fr",
    "env": {"JUPYTERHUB_API_TOKEN": "t0k", "HOME": "/root", "A": "1"},
    "path_prefix": ["/opt/visahub/instance-env/bin"], "phone_home_url": "http://10.0.2.100:8081/hub/api/visa/phone-home",
}


def test_it_is_shipped_byte_for_byte_and_is_a_runnable_stdlib_script():
    assert cloudinit.START_SCRIPT == SCRIPT.read_text()
    assert cloudinit.fw_cfg_files({})["opt/org.visahub/visa-start"] == SCRIPT.read_bytes()
    assert SCRIPT.read_text().startswith("#!/usr/bin/python3\n")
    tree = ast.parse(SCRIPT.read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported - {"__future__"} <= sys.stdlib_module_names, imported - sys.stdlib_module_names


@pytest.mark.parametrize(("cfg", "stage", "message", "extra", "body"), [
    (CFG, "account", "", {}, {"stage": "account", "message": ""}),
    (CFG, "failed", "x" * 600, {}, {"stage": "failed", "message": "x" * 500}),
    (CFG, "jupyter-up", "", {"address": "10.0.2.15", "port": 8888},
     {"stage": "jupyter-up", "message": "", "address": "10.0.2.15", "port": 8888}),
])
def test_phone_request(cfg, stage, message, extra, body):
    req = ss.phone_request(cfg, stage, message, **extra)
    assert req.full_url == CFG["phone_home_url"] and req.get_method() == "POST"
    assert req.get_header("Authorization") == "token t0k"
    assert json.loads(req.data) == body


@pytest.mark.parametrize("cfg", [
    {**CFG, "phone_home_url": ""},
    {**CFG, "env": {}},
    {},
])
def test_no_phone_home_without_a_url_and_a_token(cfg):
    assert ss.phone_request(cfg, "started") is None


@pytest.mark.parametrize("layout", ["fr", "de(nodeadkeys)", "us; reboot", "$(id)'\"`x`", "a\nXKBMODEL=evil"])
def test_the_keyboard_layout_is_one_quoted_value(layout):
    """/etc/default/keyboard is read by a shell: the layout must come back as exactly one word."""
    line = ss.keyboard_file(layout)
    assert line.startswith("XKBLAYOUT=") and line.endswith("\n")
    assert shlex.split(line[len("XKBLAYOUT="):]) == [layout]
    assert ss.keyboard_file("fr") == "XKBLAYOUT=fr\n"


def test_jupyter_argv_and_env():
    assert ss.jupyter_argv(CFG, "0.0.0.0", "/home/alice") == [
        "jupyterhub-singleuser", "--debug", "--ServerApp.ip=0.0.0.0", "--ServerApp.port=8888",
        "--FileContentsManager.preferred_dir=/home/alice"]
    env = ss.jupyter_env(CFG, OWNER)
    assert env == {"JUPYTERHUB_API_TOKEN": "t0k", "A": "1", "HOME": "/home/alice", "USER": "alice",
                   "LOGNAME": "alice", "SHELL": "/bin/bash",
                   "PATH": "/opt/visahub/instance-env/bin:/usr/local/bin:/usr/bin:/bin"}
    assert CFG["env"]["HOME"] == "/root"  # the config is not changed


@pytest.mark.parametrize(("cfg", "override", "bind", "probe"), [
    ({}, "", "0.0.0.0", "127.0.0.1"),
    ({"bind_address": "0.0.0.0"}, "", "0.0.0.0", "127.0.0.1"),
    ({"bind_address": "::"}, "", "::", "127.0.0.1"),
    ({"bind_address": "0.0.0.0"}, "127.0.0.7", "127.0.0.7", "127.0.0.7"),  # the boot emulator's
    ({"bind_address": "10.0.0.5"}, "", "10.0.0.5", "10.0.0.5"),
])
def test_where_jupyter_listens_and_where_the_script_looks(cfg, override, bind, probe):
    assert ss.bind_address(cfg, override) == bind
    assert ss.probe_host(bind) == probe


@pytest.mark.parametrize(("url", "resume"), [
    ("http://10.0.2.100:8081/hub/api/visa/phone-home", "http://10.0.2.100:8081/hub/api/visa/resume"),
    ("https://hub.example/prefix/hub/api/visa/phone-home", "https://hub.example/prefix/hub/api/visa/resume"),
])
def test_resume_url_is_beside_phone_home(url, resume):
    assert ss.resume_url(url) == resume


def test_the_zygote_request_is_one_json_line_naming_the_owner():
    line = ss.zygote_request(["jupyterhub-singleuser"], {"A": "1"}, OWNER)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"argv": ["jupyterhub-singleuser"], "env": {"A": "1"}, "cwd": "/home/alice",
                                "uid": 1500, "gid": 1501}
