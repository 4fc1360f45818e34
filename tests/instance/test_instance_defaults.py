"""The instance's Jupyter settings shipped with visa_instance (etc/jupyter/jupyter_server_config.json and
jupyter_server_config.d/visa_instance.json), as a running server of the installed instance env
(scripts/setup.sh; the analysis image installs the same package) applies them. jupyter-server reads only
the extensions to enable from .d files: settings put there are silently ignored.

Each one is there because a cold VM start pays for it under TCG emulation (docs/qemu.md): the PyPI
extension manager builds an HTTP client with its TLS context when Lab starts, and notebook_shim
inspects the server's classes; neither is of use in a facility instance, whose environment is
managed by its admins (users cannot install into it)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.instance.jupyter import JupyterServer

pytestmark = pytest.mark.root  # starts a jupyter-server from the instance env

INSTANCE_PYTHON = Path(os.environ.get("VISA_INSTANCE_ENV", "/opt/visahub/instance-env")) / "bin" / "python"


def test_lab_has_a_read_only_extension_manager_and_no_notebook_shim(tmp_path: Path) -> None:
    assert INSTANCE_PYTHON.exists(), f"no instance env at {INSTANCE_PYTHON}: run scripts/setup.sh"
    server = JupyterServer(tmp_path, python=str(INSTANCE_PYTHON), copy_shipped_config=False).start()
    try:
        with urllib.request.urlopen(f"{server.url}lab?token={server.token}", timeout=30) as r:
            page = r.read().decode()
        found = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', page, re.S)
        assert found, page[:500]
        manager = json.loads(found.group(1))["extensionManager"]
        assert manager["name"] == "read-only" and manager["can_install"] is False, manager
        log = server.log()
        for loaded in ("jupyterlab", "visa_instance", "jupyter_server_proxy", "jupyter_server_ydoc"):
            assert f"{loaded} | extension was successfully loaded" in log, log
        assert "notebook_shim" not in log, log
        assert "Extension Manager is 'readonly'" in log, log
    finally:
        server.stop()


def test_the_member_role_authorizer_and_the_role_cache_are_configured(tmp_path: Path) -> None:
    """--show-config of the installed env: what the server would run with."""
    out = subprocess.run([str(INSTANCE_PYTHON), "-m", "jupyter_server", "--show-config-json"], capture_output=True,
                         text=True, timeout=120, env={"PATH": os.defpath, "HOME": str(tmp_path),
                                                      "JUPYTER_CONFIG_DIR": str(tmp_path / "config")})
    config = json.loads(out.stdout)
    assert config["ServerApp"]["authorizer_class"] == "visa_instance.authorizer.VisaAuthorizer", config
    assert config["HubOAuth"]["cache_max_age"] == 60
    assert config["LabApp"]["extension_manager"] == "readonly"
