"""Baseline for bench/spawn_latency.py: the same hub, proxy and database, with JupyterHub's stock
SimpleLocalProcessSpawner (no sandbox, no limits, runs as the hub's user)."""
import sys
from pathlib import Path

load_subconfig(str(Path(__file__).resolve().parent.parent / "tests" / "hub_test_config.py"))  # noqa: F821

c = get_config()  # noqa: F821
c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
c.Spawner.cmd = [str(Path(sys.executable).parent / "jupyterhub-singleuser")]
c.Spawner.args = ["--allow-root"]  # the hub runs as root here; without it the server exits
c.Spawner.notebook_dir = "/tmp"
