"""The instance side's test helpers: a real jupyter-server with our extension, process snapshots."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
SHIPPED_CONFIG = (
    REPO / "visa_instance" / "jupyter-config" / "jupyter_server_config.d" / "visa_instance.json"
)
SHIPPED_SETTINGS = REPO / "visa_instance" / "jupyter-config" / "jupyter_server_config.json"


# ------------------------------------------------------------------ processes, read from /proc


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    state: str
    start: int
    comm: str


def read_stat(pid: int) -> Proc | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except OSError:
        return None
    head, _, rest = raw.rpartition(")")
    f = rest.split()
    return Proc(pid, int(f[1]), int(f[2]), f[0], int(f[19]), head.partition("(")[2])


def snapshot() -> list[Proc]:
    procs = []
    for name in os.listdir("/proc"):
        if name.isdigit() and (p := read_stat(int(name))) is not None:
            procs.append(p)
    return procs


def descendants(root: int) -> list[Proc]:
    """All live descendants of ``root`` (independent of the package's own helper)."""
    procs = snapshot()
    found, frontier = [], {root}
    while frontier:
        level = [p for p in procs if p.ppid in frontier and p.state != "Z"]
        found += level
        frontier = {p.pid for p in level}
    return found


def still_alive(procs: list[Proc]) -> list[Proc]:
    """Those of ``procs`` still running (same pid *and* start time, not a zombie)."""
    alive = []
    for p in procs:
        now = read_stat(p.pid)
        if now is not None and now.start == p.start and now.state != "Z":
            alive.append(now)
    return alive


def group_members(pgid: int) -> list[Proc]:
    return [p for p in snapshot() if p.pgid == pgid and p.state != "Z"]


# ------------------------------------------------------------------ a jupyter server


@dataclass
class JupyterServer:
    """A plain ``jupyter server`` (hub venv) with the shipped extension config and a token."""

    root: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    port: int = 0
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    proc: subprocess.Popen | None = None
    # the hub venv's Python with the shipped config copied in, or an installed env's own Python
    python: str = sys.executable
    copy_shipped_config: bool = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> JupyterServer:
        home = self.root / "home"
        config_d = self.root / "config" / "jupyter_server_config.d"
        config_d.mkdir(parents=True)
        home.mkdir()
        if self.copy_shipped_config:
            shutil.copy(SHIPPED_CONFIG, config_d / SHIPPED_CONFIG.name)
            shutil.copy(SHIPPED_SETTINGS, config_d.parent / SHIPPED_SETTINGS.name)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "JPY", "VISA_"))}
        env.update(
            HOME=str(home),
            JUPYTER_CONFIG_DIR=str(self.root / "config"),
            JUPYTER_DATA_DIR=str(home / ".local/share/jupyter"),
            JUPYTER_RUNTIME_DIR=str(home / ".local/share/jupyter/runtime"),
            JUPYTER_PLATFORM_DIRS="1",
            # the shipped "Data analysis" kernelspec (the only one allowed): the editable hub venv
            # does not install setup.cfg's data_files
            JUPYTER_PATH=str(SHIPPED_SETTINGS.parent),
        )
        env.update(self.env_extra)
        self.port = free_port()
        cmd = [
            self.python, "-m", "jupyter_server",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0", "--ServerApp.open_browser=False",
            f"--ServerApp.root_dir={home}", f"--IdentityProvider.token={self.token}",
        ]
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        self.log_path = self.root / "server.log"
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=home, stdin=subprocess.DEVNULL,
            stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT,
        )
        wait_for(self._ready, 60, "jupyter server to answer /api/status")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"jupyter server exited early:\n{self.log()}")
        try:
            with urllib.request.urlopen(f"{self.url}api/status?token={self.token}", timeout=2):
                return True
        except (urllib.error.URLError, OSError):
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM, as JupyterHub's spawners do; SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"jupyter server ignored SIGTERM for {timeout}s:\n{self.log()}") from None
