"""Fixtures for the instance side: a real jupyter-server with our extension (tests/instance/jupyter.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.instance.jupyter import JupyterServer


@pytest.fixture
def jupyter_server(tmp_path: Path) -> Iterator[Callable[..., JupyterServer]]:
    """Factory: ``jupyter_server(VISA_SCREEN=...)`` starts one; all are stopped afterwards."""
    servers: list[JupyterServer] = []

    def start(**env: str) -> JupyterServer:
        server = JupyterServer(tmp_path / f"server{len(servers)}", env_extra=env)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
