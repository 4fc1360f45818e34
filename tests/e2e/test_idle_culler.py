"""The stock `jupyterhub-idle-culler` (from PyPI) does the right thing on VISA Hub (issue 17): the
hub's `last_activity` of a server is real use only, so an instance whose desktop tab is open but
untouched is culled although its VNC stream flows through the proxy, and an instance whose
desktop receives input is not, well past the culler's timeout.

A real hub (demo profile, sandbox instances) whose single-user servers report activity every
second, and the real culler as a process with the tests' admin token.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from tests.collab.helpers import Person
from tests.hubtools import TEST_CONFIG, VENV_BIN, Hub, demo_state, running_hub
from tests.rfb import RfbClient
from tests.support import wait_for

pytestmark = pytest.mark.root  # a real hub with sandbox instances

TIMEOUT = 20  # the culler's --timeout, seconds without activity
OWNER, PROPOSAL = "alice", "P-2026-011"


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    """Its own hub: the single-user servers report activity every second (not every 5 min)."""
    for state in demo_state():
        config = state / "idle_culler_hub_config.py"
        config.write_text(
            f"load_subconfig({str(TEST_CONFIG)!r})\n"
            "c = get_config()\n"
            "c.Spawner.environment = {**c.Spawner.environment, 'JUPYTERHUB_ACTIVITY_INTERVAL': '1'}\n"
        )
        with running_hub(state, config=config) as running:
            yield running


@pytest.fixture
def culler(hub: Hub) -> Iterator[subprocess.Popen]:
    """jupyterhub-idle-culler checking every 2 s, as an external process with an admin token."""
    log = open(hub.state / "culler.log", "ab")
    proc = subprocess.Popen(
        [str(VENV_BIN / "jupyterhub-idle-culler"), f"--url={hub.url}/hub/api", f"--timeout={TIMEOUT}",
         "--cull-every=2"],
        env={"JUPYTERHUB_API_TOKEN": hub.token, "PATH": "/usr/bin:/bin"}, cwd=hub.state,
        stdout=log, stderr=subprocess.STDOUT,
    )
    yield proc
    proc.terminate()
    proc.wait(10)


def new_instance(alice: Person, hub: Hub, name: str) -> str:
    r = alice.new_instance(name=name, proposal=PROPOSAL, plan="sandbox-small", screen="1280x720", keyboard="us")
    assert r.status_code == 302, r.text[:500]
    server = r.headers["location"].rsplit("/", 1)[1]
    hub.wait_ready(OWNER, server)
    return server


def open_desktop(alice: Person, server: str) -> RfbClient:
    page = alice.open_instance(OWNER, server, "visa/desktop")
    config = json.loads(re.search(r'id="visa-desktop-config" type="application/json">(.*?)</script>', page.text)[1])
    # the page's bar embeds this instance's operations banner (shown if the service answers)
    assert config["opsBanner"] == f"/services/visa-ops/banner?{urlencode({'owner': OWNER, 'server': server})}"
    client = RfbClient(alice.websocket(OWNER, server, "desktop/"))
    client.screen()
    return client


def running(hub: Hub, server: str) -> bool:
    return bool((hub.server_model(OWNER, server) or {}).get("ready"))


def test_an_open_idle_desktop_is_culled_and_a_used_one_is_not(hub: Hub, culler: subprocess.Popen) -> None:
    alice = Person(hub, OWNER)
    idle_server, busy_server = new_instance(alice, hub, "Idle desktop"), new_instance(alice, hub, "Busy desktop")
    idle, busy = open_desktop(alice, idle_server), open_desktop(alice, busy_server)
    busy_since = time.monotonic()

    def a_tab_watched_and_a_tab_used() -> bool:
        """One round of the two tabs: the idle one pulls a full screen through the proxy (what a
        noVNC tab's stream does) and polls the Jupyter API as an open Lab tab does; the busy one
        types (shift, which draws nothing)."""
        if running(hub, idle_server):  # (if the culler stops it under us, wait_for tries again)
            idle.screen()
            for path in ("api/sessions", "api/kernels", "api/contents", "api/terminals"):
                assert alice.instance_call("GET", OWNER, idle_server, path).status_code == 200
        busy.key(0xFFE1, True)
        busy.key(0xFFE1, False)
        assert culler.poll() is None, (hub.state / "culler.log").read_text()[-2000:]
        return not running(hub, idle_server)

    watched_since = time.monotonic()
    wait_for(a_tab_watched_and_a_tab_used, TIMEOUT + 90, "the culler to stop the idle instance", interval=0.5)
    print(f"idle instance culled {time.monotonic() - watched_since:.1f} s after its desktop was opened")
    assert running(hub, busy_server)
    culled = [line for line in (hub.state / "culler.log").read_text().splitlines() if "Culling server" in line]
    assert any(f"{OWNER}/{idle_server}" in line for line in culled), culled
    assert not any(f"{OWNER}/{busy_server}" in line for line in culled), culled

    # keep using the busy one until it has lived twice the culler's timeout: still there
    wait_for(lambda: a_tab_watched_and_a_tab_used() and time.monotonic() - busy_since > 2 * TIMEOUT,
             2 * TIMEOUT + 30, "the busy instance to outlive twice the timeout", interval=0.5)
    assert running(hub, busy_server), (hub.state / "culler.log").read_text()[-2000:]
    busy.request()
    busy.read_update()  # its desktop still answers
    busy.close()
    idle.close()
