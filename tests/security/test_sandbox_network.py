"""Each sandbox has its own network: nothing of the host or of other instances is reachable from
it but the hub's own addresses (issue 15, item 2).

Measured before the fix: a web app bob started on 127.0.0.1 in his instance (embargoed
P-2026-011 data) was readable from carol's, and `/proc/net/tcp` inside listed every host port.
The hub tests run code in the instances through a kernel, as the scientists would.
"""
from __future__ import annotations

import json
import re
import socket
import subprocess
import uuid

import pytest

from tests.hubtools import run_code, unique
from tests.spawner.sandbox.sandbox_probe import cgroup_pids, processes_of
from visa_spawner.backends.sandbox.command import SandboxLayout, bwrap_argv
from visa_spawner.backends.sandbox.network import HubRoute, bridge_argv, hub_routes

BOB_PROPOSAL, CAROL_PROPOSAL = "P-2026-011", "P-2026-042"
HUB_ENV = ("JUPYTERHUB_API_URL", "JUPYTERHUB_ACTIVITY_URL", "VISA_COLLAB_URL")


# -- pure: what the sandbox may reach, and the command lines ----------------------------------

ROUTE_CASES = [
    pytest.param(
        {"JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api",
         "JUPYTERHUB_ACTIVITY_URL": "http://127.0.0.1:8081/hub/api/users/a/activity",
         "VISA_COLLAB_URL": "http://127.0.0.1:9000/services/visa-collab/"},
        {}, [HubRoute(8081, "127.0.0.1", 8081), HubRoute(9000, "127.0.0.1", 9000)],
        id="loopback hub and service: same port inside, one route per port, URLs unchanged"),
    pytest.param(
        {"JUPYTERHUB_API_URL": "http://hub.internal:8081/hub/api", "OTHER": "http://db:5432/"},
        {"JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api"}, [HubRoute(8081, "hub.internal", 8081)],
        id="a named hub is rewritten to 127.0.0.1 inside; unlisted variables are no route"),
    pytest.param(
        {"JUPYTERHUB_API_URL": "https://10.0.0.5/hub/api?x=1"},
        {"JUPYTERHUB_API_URL": "https://127.0.0.1:443/hub/api?x=1"}, [HubRoute(443, "10.0.0.5", 443)],
        id="default port of the scheme, query kept"),
    pytest.param({"VISA_COLLAB_URL": ""}, {}, [], id="empty: no route"),
]


@pytest.mark.parametrize("env, rewritten, routes", ROUTE_CASES)
def test_hub_routes(env, rewritten, routes):
    out, got = hub_routes(env, HUB_ENV, jupyter_port=12345)
    assert list(got) == routes
    assert out == {**env, **rewritten}


@pytest.mark.parametrize("env, message", [
    ({"JUPYTERHUB_API_URL": "http://127.0.0.1:8081/", "VISA_COLLAB_URL": "http://10.0.0.9:8081/"}, "already routed"),
    ({"JUPYTERHUB_API_URL": "http://127.0.0.1:12345/"}, "own Jupyter port"),
    ({"JUPYTERHUB_API_URL": "unix:/run/hub.sock"}, "not an http(s) URL"),
])
def test_hub_routes_refuses_what_cannot_be_routed(env, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        hub_routes(env, HUB_ENV, jupyter_port=12345)


def test_sandbox_gets_its_own_network_namespace_and_bridge_pipes():
    layout = SandboxLayout(uid=5, gid=6, home_host="/h", home_inside="/home/x", instance_env="/opt/env")
    argv = bwrap_argv(layout, ["jupyter"], info_fd=7, block_fd=8)
    assert "--unshare-all" in argv and "--share-net" not in argv
    assert argv[argv.index("--info-fd") + 1] == "7" and argv[argv.index("--block-fd") + 1] == "8"
    assert argv.index("--block-fd") < argv.index("--") and argv[-1] == "jupyter"
    assert "--info-fd" not in bwrap_argv(layout, ["jupyter"])


def test_bridge_argv():
    argv = bridge_argv(info_fd=3, block_fd=4, jupyter_port=5000, uid=7, gid=8, python="/py", script="/b.py",
                       routes=[HubRoute(8081, "127.0.0.1", 8081), HubRoute(443, "hub", 443)])
    assert argv == ["/py", "-I", "/b.py", "--info-fd=3", "--block-fd=4", "--publish=5000", "--uid=7", "--gid=8",
                    "--route=8081=127.0.0.1:8081", "--route=443=hub:443"]


# -- a real hub, real sandboxes ---------------------------------------------------------------

def create(client, proposal: str) -> str:
    r = client.new_instance(name=unique("Net"), proposal=proposal, plan="sandbox-small", screen="1280x720",
                            keyboard="us")
    assert r.status_code == 302, r.text[:500]
    return r.headers["location"].rsplit("/", 1)[1]


def inside(client, owner: str, server: str, code: str) -> dict:
    """Run `code` in the instance; it prints one JSON line, returned as a dict."""
    out = run_code(client, owner, server, code)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, out
    return json.loads(lines[-1])


PROBE = """
import errno, json, os, socket
def probe(host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((host, port))
        return "open"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
    finally:
        s.close()
"""


def host_listeners() -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket of the host, as `ss -ltn` shows them."""
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        local = line.split()[3]
        addr, _, port = local.rpartition(":")
        found.append((addr.strip("[]").split("%")[0], int(port)))
    return found


def listening(proc_net_tcp: str) -> dict[int, set[int]]:
    """Listening TCP sockets in /proc/net/tcp{,6} text: port → socket inodes."""
    found: dict[int, set[int]] = {}
    for line in proc_net_tcp.splitlines():
        fields = line.split()
        if len(fields) > 9 and fields[3] == "0A":  # TCP_LISTEN
            found.setdefault(int(fields[1].rsplit(":", 1)[1], 16), set()).add(int(fields[9]))
    return found


def host_proc_net_tcp() -> str:
    return open("/proc/net/tcp").read() + open("/proc/net/tcp6").read()


def host_addresses() -> list[str]:
    out = subprocess.run(["hostname", "-I"], check=False, capture_output=True, text=True).stdout.split()
    return [a for a in out if not a.startswith("fe80")]


@pytest.mark.root
def test_a_web_app_in_one_instance_is_not_reachable_from_another(hub, login):
    bob, carol = login("bob"), login("carol")
    bob_server, carol_server = create(bob, BOB_PROPOSAL), create(carol, CAROL_PROPOSAL)
    hub.wait_ready("bob", bob_server)
    hub.wait_ready("carol", carol_server)
    secret = f"embargoed-{uuid.uuid4().hex}"

    # bob serves his proposal's data on 127.0.0.1, from a process that outlives the kernel
    served = inside(bob, "bob", bob_server, f"""
import json, os, subprocess, sys, time, urllib.request
app = '''
import http.server, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"{secret}")
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(os.path.expanduser("~/.app-port"), "w").write(str(s.server_address[1]))
s.serve_forever()
'''
subprocess.Popen([sys.executable, "-c", app], start_new_session=True, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL)
path = os.path.expanduser("~/.app-port")
for _ in range(200):
    if os.path.exists(path) and open(path).read():
        break
    time.sleep(0.05)
port = int(open(path).read())
body = urllib.request.urlopen(f"http://127.0.0.1:{{port}}/", timeout=5).read().decode()
print(json.dumps({{"port": port, "body": body, "jupyter": os.environ["JUPYTERHUB_SERVICE_URL"]}}))
""")
    assert served["body"] == secret  # the app works for bob himself
    port, bob_jupyter = served["port"], urlsplit_port(served["jupyter"])

    seen = inside(carol, "carol", carol_server, PROBE + f"""
import urllib.request
try:
    body = urllib.request.urlopen("http://127.0.0.1:{port}/", timeout=3).read().decode()
except OSError as e:
    body = type(e).__name__
tcp = open("/proc/net/tcp").read() + open("/proc/net/tcp6").read()
# the port the hub picked for bob's Jupyter is carol's to use inside her own network
s = socket.socket()
try:
    s.bind(("127.0.0.1", {bob_jupyter})); s.listen(); bound = True
except OSError:
    bound = False
s.close()
print(json.dumps({{"body": body, "probe": probe("127.0.0.1", {port}), "listed": ":%04X " % {port} in tcp,
                   "bound_bobs_port": bound}}))
""")
    assert secret not in seen["body"], seen
    assert seen["probe"] == "ECONNREFUSED", seen
    assert not seen["listed"], "carol's /proc/net/tcp shows bob's app"
    assert seen["bound_bobs_port"]
    with pytest.raises(OSError):  # not published on the host either
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    # bob's instance still answers through the hub, even with his Jupyter's port taken in carol's
    assert bob.instance_api("GET", "bob", bob_server, "api/status").status_code == 200
    hub.delete_server("carol", carol_server)
    hub.delete_server("bob", bob_server)


@pytest.mark.root
def test_no_host_port_is_reachable_from_an_instance_but_the_hub_routes(hub, login):
    bob, carol = login("bob"), login("carol")
    server = create(bob, BOB_PROPOSAL)
    other = create(carol, CAROL_PROPOSAL)  # another instance's Jupyter port is one of the host's
    hub.wait_ready("bob", server)
    hub.wait_ready("carol", other)

    # listeners of our own, so the test never depends on what else runs on this host
    own = [socket.create_server(("0.0.0.0", 0)), socket.create_server(("127.0.0.1", 0))]
    abstract = socket.socket(socket.AF_UNIX)
    abstract_name = f"\0visa-test-{uuid.uuid4().hex}"
    abstract.bind(abstract_name)
    abstract.listen()
    try:
        listeners = host_listeners()
        host_sockets = {inode for inodes in listening(host_proc_net_tcp()).values() for inode in inodes}
        ports = {p for _, p in listeners}
        assert {hub.port, hub.api_port, hub.proxy_port} <= ports
        assert all(s.getsockname()[1] in ports for s in own)
        targets = set()
        for addr, port in listeners:
            if addr in ("0.0.0.0", "*", "::"):
                targets |= {("127.0.0.1", port)} | {(a, port) for a in host_addresses()}
            else:
                targets.add((addr, port))
        result = inside(bob, "bob", server, PROBE + f"""
from urllib.parse import urlsplit
import urllib.request
env = {{k: os.environ.get(k, "") for k in {list(HUB_ENV)!r} + ["JUPYTERHUB_SERVICE_URL"]}}
results = {{f"{{h}}|{{p}}": probe(h, p) for h, p in {sorted(targets)!r}}}
u = socket.socket(socket.AF_UNIX)
try:
    u.connect({abstract_name!r}); results["abstract"] = "open"
except OSError as e:
    results["abstract"] = errno.errorcode.get(e.errno, str(e))
hub_api = json.loads(urllib.request.urlopen(env["JUPYTERHUB_API_URL"], timeout=10).read())
try:
    collab = urllib.request.urlopen(env["VISA_COLLAB_URL"], timeout=10).status
except urllib.error.HTTPError as e:
    collab = e.code  # an answer from the service is what counts here
tcp = open("/proc/net/tcp").read() + open("/proc/net/tcp6").read()
print(json.dumps({{"env": env, "results": results, "hub_version": hub_api.get("version"), "collab": collab,
                  "tcp": tcp}}))
""")
    finally:
        for s in own:
            s.close()
        abstract.close()

    env = result["env"]
    own_port = urlsplit_port(env["JUPYTERHUB_SERVICE_URL"])
    routed = {urlsplit_port(env[k]) for k in HUB_ENV if env[k]}
    collab_port = urlsplit_port(env["VISA_COLLAB_URL"])
    assert routed == {hub.api_port, collab_port}, env  # the hub's API and the collaboration service
    assert collab_port in {p for _, p in listeners}
    assert hub.port not in routed and hub.proxy_port not in routed
    for port in routed:  # the hub's routes are really there
        assert result["results"].get(f"127.0.0.1|{port}") == "open", result["results"]
    # Anything else that answers must be a socket of the instance's own network (its kernel's
    # ports may happen to have a host port's number), never one of the host's sockets.
    inside_sockets = listening(result["tcp"])
    leaks = []
    for addr, port in sorted(targets):
        outcome = result["results"][f"{addr}|{port}"]
        if port in routed | {own_port} or outcome in ("ECONNREFUSED", "ENETUNREACH", "EHOSTUNREACH"):
            continue
        mine = inside_sockets.get(port, set())
        if addr != "127.0.0.1" or outcome != "open" or not mine or mine & host_sockets:
            leaks.append((addr, port, outcome))
    assert not leaks, f"host ports reachable from the instance: {leaks}"
    assert not set(inside_sockets.get(hub.port, set())) & host_sockets
    assert result["results"]["abstract"] == "ECONNREFUSED"
    assert result["hub_version"] and result["collab"] in (200, 302, 403, 404)

    # the instance works through the hub; its bridge dies with it
    assert bob.instance_api("GET", "bob", server, "api/status").status_code == 200
    assert _connectable(own_port)  # the bridge publishes Jupyter on the host at the same port
    hub.stop_server("bob", server)
    assert cgroup_pids("bob", server) == set()
    assert processes_of("bob", server) == []
    assert not _connectable(own_port)
    hub.delete_server("bob", server)
    hub.delete_server("carol", other)


def urlsplit_port(url: str) -> int:
    from urllib.parse import urlsplit

    return urlsplit(url).port


def _connectable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
