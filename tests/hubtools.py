"""Start a real JupyterHub (npm configurable-http-proxy, demo profile) for tests and benchmarks.

Every wait is on a condition with a deadline; nothing sleeps a fixed time hoping it is enough.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.support import free_port, wait_for  # noqa: F401 (re-exported for bench/)

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
DEMO_CONFIG = REPO / "hub_config" / "demo" / "jupyterhub_config.py"
TEST_CONFIG = REPO / "tests" / "hub_test_config.py"


class SpawnFailed(AssertionError):
    """The hub reports the spawn as failed: stop waiting."""


class HubExited(RuntimeError):
    """The hub process ended while we waited for it: stop waiting and show its log."""


def make_state_dir(prefix: str = "visahub-test-") -> Path:
    """A state dir the sandbox accounts can traverse (pytest's tmp dirs are 0700 under /tmp)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    path.chmod(0o711)
    return path


def make_demo_data(catalogue: Path, data_dir: Path) -> None:
    subprocess.run(
        [str(VENV_BIN / "visa-make-demo-data"), "--catalogue", str(catalogue), "--out", str(data_dir)],
        check=True, capture_output=True,
    )


class Hub:
    """A running hub process and an admin API token for it."""

    def __init__(self, state: Path, config: Path = TEST_CONFIG, extra_env: dict | None = None) -> None:
        self.state = state
        self.config = config
        self.port, self.api_port, self.proxy_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = _state_secret(state, "test_api_token")
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None
        self.log_path = state / "hub.log"

    def start(self, timeout: float = 60) -> Hub:
        env = {
            **os.environ, "VISA_STATE_DIR": str(self.state), "VISA_HUB_PORT": str(self.port),
            "VISA_HUB_API_PORT": str(self.api_port), "VISA_PROXY_API_PORT": str(self.proxy_port),
            "VISA_TEST_API_TOKEN": self.token,
            # the demo's IOCs and gateway only where a test asks for them (extra_env), to spare the CPU
            "VISA_DEMO_INSTRUMENTS": "", **self.extra_env,
        }
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "jupyterhub"), "-f", str(self.config)],
            cwd=self.state, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for(self._up, timeout, f"hub on {self.url} (log: {self.log_path})", reraise=HubExited)
        return self

    def _up(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            raise HubExited(f"hub exited with {self.proc.returncode}; log: {self.log_tail()}")
        return requests.get(f"{self.url}/hub/api", timeout=2).status_code == 200

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """Stop the hub (its proxy too); instances are left running, as in production."""
        if not self.proc or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    # -- REST API as admin -----------------------------------------------------------------
    def api(self, method: str, path: str, **kw) -> requests.Response:
        headers = {"Authorization": f"token {self.token}", **kw.pop("headers", {})}
        return requests.request(method, f"{self.url}/hub/api{path}", headers=headers, timeout=30, **kw)

    def server_model(self, user: str, name: str) -> dict | None:
        """The server's model, stopped servers included (None if it does not exist)."""
        r = self.api("GET", f"/users/{user}?include_stopped_servers=1")
        if r.status_code != 200:
            return None
        return r.json().get("servers", {}).get(name)

    def wait_ready(self, user: str, name: str, timeout: float = 90) -> dict:
        seen_pending = []

        def ready():
            model = self.server_model(user, name)
            if model and model.get("pending"):
                seen_pending.append(True)
            if seen_pending and model and not model.get("ready") and not model.get("pending"):
                raise SpawnFailed(f"spawn of {user}/{name} failed: {self.log_tail(80)}")
            return model if model and model.get("ready") else None

        return wait_for(ready, timeout, f"{user}/{name} ready", reraise=SpawnFailed)

    def stop_server(self, user: str, name: str, timeout: float = 60) -> None:
        r = self.api("DELETE", f"/users/{user}/servers/{name}")
        assert r.status_code in (202, 204), r.text
        wait_for(lambda: not (self.server_model(user, name) or {}).get("ready") and
                 not (self.server_model(user, name) or {}).get("pending"), timeout, f"{user}/{name} stopped")

    def delete_server(self, user: str, name: str, timeout: float = 60) -> None:
        """Stop (if needed) and delete a named server for ever, as the home page's Delete does."""
        r = self.api("DELETE", f"/users/{user}/servers/{name}", json={"remove": True})
        assert r.status_code in (202, 204), r.text
        wait_for(lambda: self.server_model(user, name) is None, timeout, f"{user}/{name} deleted")

    def stop_all_servers(self) -> None:
        r = self.api("GET", "/users")
        for u in r.json() if r.ok else []:
            for name, model in u.get("servers", {}).items():
                if model.get("ready") or model.get("pending") == "spawn":
                    self.api("DELETE", f"/users/{u['name']}/servers/{name}")
        wait_for(lambda: not any(m for u in self.api("GET", "/users").json() for m in u.get("servers", {}).values()
                                 if m.get("ready") or m.get("pending")), 60, "all servers stopped")


def _state_secret(state: Path, name: str) -> str:
    path = state / name
    if not path.exists():
        path.write_text(secrets.token_hex(24))
        path.chmod(0o600)
    return path.read_text().strip()


class Browserless:
    """A person's browser session driven with requests: login form, hub pages, instance API."""

    def __init__(self, hub: Hub, user: str, password: str) -> None:
        self.hub, self.user = hub, user
        self.s = requests.Session()
        r = self.s.get(f"{hub.url}/hub/login", timeout=10)
        r = self.s.post(
            f"{hub.url}/hub/login?next=", timeout=10,
            data={"username": user, "password": password, "_xsrf": _form_xsrf(r.text)},
        )
        self.login_response = r

    @property
    def logged_in(self) -> bool:
        return "jupyterhub-hub-login" in self.s.cookies.keys()

    def home(self) -> requests.Response:
        return self.s.get(f"{self.hub.url}/hub/home", timeout=10)

    def new_instance(self, **fields: str) -> requests.Response:
        xsrf = _form_xsrf(self.home().text)
        return self.s.post(f"{self.hub.url}/hub/visa/new", data={"_xsrf": xsrf, **fields},
                           allow_redirects=False, timeout=30)

    def instance_get(self, owner: str, name: str, path: str, **kw) -> requests.Response:
        """GET in an instance, going through the hub's OAuth login like a browser does."""
        return self.s.get(f"{self.hub.url}/user/{owner}/{name}/{path}", timeout=30, **kw)

    def instance_api(self, method: str, owner: str, name: str, path: str, **kw) -> requests.Response:
        base = f"/user/{owner}/{name}/"
        if not any(c.name == "_xsrf" and c.path == base for c in self.s.cookies):
            self.instance_get(owner, name, "lab")  # OAuth round trip, sets the instance's cookies
        xsrf = next((c.value for c in self.s.cookies if c.name == "_xsrf" and c.path == base), "")
        return self.s.request(method, f"{self.hub.url}{base}{path}", headers={"X-XSRFToken": xsrf}, timeout=30, **kw)


def _form_xsrf(html: str) -> str:
    m = re.search(r'name="_xsrf" value="([^"]+)"', html)
    assert m, "no _xsrf field in the page"
    return m.group(1)


@contextmanager
def running_hub(state: Path, **kw) -> Iterator[Hub]:
    hub = Hub(state, **kw).start()
    try:
        yield hub
    finally:
        try:
            hub.stop_all_servers()
        finally:
            hub.stop()


def unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:6]}"


def dump(obj) -> str:
    return json.dumps(obj, indent=1, default=str)


def run_code(client: Browserless, owner: str, name: str, code: str, timeout: float = 60) -> str:
    """Run Python `code` in a kernel of the instance (as its sandboxed user); return its stdout.

    Goes through the hub and the instance's own auth, as a person's browser does.
    """
    import websocket  # websocket-client, a jupyter-server dependency

    r = client.instance_api("POST", owner, name, "api/kernels", json={"name": "data-analysis"})
    assert r.status_code == 201, r.text
    kernel = r.json()["id"]
    base = f"/user/{owner}/{name}/"
    cookies = "; ".join(f"{c.name}={c.value}" for c in client.s.cookies
                        if c.path in ("/", base, base.rstrip("/")) or base.startswith(c.path))
    ws = websocket.create_connection(
        client.hub.url.replace("http", "ws") + f"{base}api/kernels/{kernel}/channels",
        header=[f"Cookie: {cookies}"], origin=client.hub.url, timeout=timeout,
    )
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": uuid.uuid4().hex,
                   "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }))
    out: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "stream":
                out.append(msg["content"]["text"])
            elif kind == "error":
                out.append(f"{msg['content']['ename']}: {msg['content']['evalue']}\n")
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                break
    finally:
        ws.close()
        client.instance_api("DELETE", owner, name, f"api/kernels/{kernel}")
    return "".join(out)


def demo_state() -> Iterator[Path]:
    """A new hub state dir with the demo data; removed afterwards."""
    state = make_state_dir()
    make_demo_data(DEMO_CONFIG.parent / "catalogue.yaml", state / "data")
    yield state
    shutil.rmtree(state, ignore_errors=True)


def login_factory(hub: Hub):
    """login("alice") → a logged-in requests-driven browser session (demo password)."""
    sessions: dict[str, Browserless] = {}

    def _login(user: str) -> Browserless:
        if user not in sessions:
            sessions[user] = Browserless(hub, user, f"{user}-demo")
            assert sessions[user].logged_in, f"demo login of {user} failed"
        return sessions[user]

    return _login
