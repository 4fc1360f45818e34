"""The guest protocol (visa_spawner/backends/guest/protocol.py): secret masking, and every side of
the hub/guest contract spelling its names from it (the start script, shipped alone, by copy)."""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from visa_spawner.backends.guest import protocol, start_script
from visa_spawner.backends.openstack import model
from visa_spawner.backends.qemu import boot

REPO = Path(__file__).resolve().parents[3]
AGENT_DIR = REPO / "images" / "agent"

@pytest.mark.parametrize(("text", "masked"), [
    ("mount: token=abc123 failed", "mount: token=[secret] failed"),
    ("JUPYTERHUB_API_TOKEN=abc def", "JUPYTERHUB_API_TOKEN=[secret] def"),
    ("password: hunter2", "password: [secret]"),
    ('{"token": "abc", "port": 1}', '{"token": [secret], "port": 1}'),
    ('{"resume_key":"k1","x":2}', '{"resume_key":[secret],"x":2}'),
    ('secret="two words" rest', 'secret=[secret] rest'),
    ("url?token=abc&next=/x", "url?token=[secret]"),
    ("Key = v", "Key = [secret]"),
    ("no secrets here: keyboard us", "no secrets here: keyboard us"),
    ("token= ", "token= "),  # nothing to mask
    ("", ""),
])
def test_mask_secrets(text: str, masked: str):
    assert protocol.mask_secrets(text) == masked
    assert start_script.mask_secrets(text) == masked  # the start script's own copy


def test_the_start_script_copies_are_the_protocol():
    """The start script runs alone in the guest, so it repeats what it needs of the protocol."""
    assert start_script.SECRETISH.pattern == protocol.SECRETISH.pattern
    assert start_script.SECRETISH.flags == protocol.SECRETISH.flags
    if "VISA_INSTANCE_CONFIG" not in os.environ:
        assert start_script.CONFIG == protocol.CONFIG_PATH
    if "VISA_ZYGOTE_SOCKET" not in os.environ:
        assert start_script.ZYGOTE == protocol.ZYGOTE_SOCKET


def test_the_zygote_status_lies_beside_its_socket():
    """visa_zygote.py derives the status path from its socket; the agent reads ZYGOTE_STATUS."""
    assert os.path.splitext(protocol.ZYGOTE_SOCKET)[0] + ".json" == protocol.ZYGOTE_STATUS


def test_fw_cfg_names_are_under_the_directory_and_fit_qemu():
    for name in (protocol.FW_CFG_CONFIG, protocol.FW_CFG_SCRIPT):
        assert name.startswith(protocol.FW_CFG_DIR + "/") and name.startswith("opt/")
        assert len(name) < 56  # QEMU's FW_CFG_MAX_FILE_PATH


def stage_literals(path: Path, positions: dict[str, int]) -> set[str]:
    """The string literals passed to the named functions or methods at the given argument position
    (`report("agent-started")`, `phone(cfg, "account")`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        at = positions.get(name)
        if at is not None and len(node.args) > at and isinstance(node.args[at], ast.Constant):
            found.add(node.args[at].value)
    return found


def test_every_stage_the_guest_reports_is_in_the_protocol():
    agent = stage_literals(AGENT_DIR / "visa_agent.py", {"report": 0, "mark": 0})
    assert agent and agent <= set(protocol.AGENT_STAGES), agent - set(protocol.AGENT_STAGES)
    script = stage_literals(Path(start_script.__file__), {"phone": 1})
    assert script | {"failed"} == set(protocol.SCRIPT_STAGES)
    assert set(protocol.SCRIPT_STAGES) <= set(protocol.AGENT_STAGES)


def test_the_backends_progress_tables_name_protocol_stages():
    """Each backend shows its own text per stage; the stage names are the protocol's."""
    assert set(model.STAGES) <= set(protocol.SCRIPT_STAGES)
    console_only = {"kernel", "init"}  # recognised by qemu.command.console_stage, not reported
    assert set(boot.STAGE_PROGRESS) - console_only <= set(protocol.AGENT_STAGES)


def test_the_agent_and_the_zygote_import_the_protocol_from_beside_them():
    """images/agent/visa_protocol.py is this module (a link), found on the agent's own path."""
    assert (AGENT_DIR / "visa_protocol.py").resolve() == Path(protocol.__file__).resolve()
    import visa_agent  # images/agent is on pytest's pythonpath (setup.cfg), as on the agent's own path
    assert Path(visa_agent.protocol.__file__).resolve() == Path(protocol.__file__).resolve()
    zygote = ast.parse((AGENT_DIR / "visa_zygote.py").read_text())
    assert any(isinstance(n, ast.Import) and n.names[0].name == "visa_protocol" for n in zygote.body)
