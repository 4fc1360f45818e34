"""The instances' channel relayed by the hub (`visa_collab.instance_relay`), ``-m fast``.

The relay runs in a tornado app as the hub mounts it (``/hub`` + its handlers, the hub's service
registry in the settings) in front of a stand-in service that records what reaches it. Then the
URL each backend gives its instance: the relay on the hub URL that instance already reaches
(a sandbox's loopback, qemu's 10.0.2.100, OpenStack's ``hub_connect_url`` in the user-data).
The whole path from a real VM is in tests/spawner/qemu/test_qemu_vm_flow.py.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
import yaml
from jupyterhub.objects import Hub
from jupyterhub.spawner import Spawner
from tornado import web
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer

from tests.spawner.openstack.support import make_backend, spec
from tests.support import free_port
from visa_collab import instance_relay
from visa_spawner.backends.qemu.command import HUB_GUEST_ADDRESS, guest_env

PREFIX = "/services/visa-collab/"


class StandIn:
    """The service's two instance routes: records each request, answers 403 to token 'bad'."""

    def __init__(self) -> None:
        self.seen: list[dict] = []
        service = self

        class Channel(web.RequestHandler):
            def check_xsrf_cookie(self) -> None:
                pass

            def handle(self, owner: str, server: str, channel: str) -> None:
                r = self.request
                service.seen.append({"method": r.method, "path": r.path, "query": r.query,
                                     "headers": dict(r.headers), "body": r.body})
                if r.headers.get("Authorization") == "token bad":
                    self.set_status(403)
                    self.finish({"status": 403, "message": "Only the instance itself may report on it."})
                    return
                self.finish({"owner": owner, "server": server, "channel": channel, "version": "v2"})

            get = post = handle

        self.app = web.Application([(rf"{PREFIX}api/instances/([^/]+)/([^/]+)/(presence|room)", Channel)])


@asynccontextmanager
async def relayed() -> AsyncIterator[tuple[str, StandIn]]:
    standin, service_port, hub_port = StandIn(), free_port(), free_port()
    services = {"visa-collab": SimpleNamespace(url=f"http://127.0.0.1:{service_port}", prefix=PREFIX)}
    hub_app = web.Application([(f"/hub{p}", h) for p, h in instance_relay.handlers],
                              services=services, xsrf_cookies=True)  # as the hub sets it
    servers = [HTTPServer(standin.app), HTTPServer(hub_app)]
    servers[0].listen(service_port, "127.0.0.1")
    servers[1].listen(hub_port, "127.0.0.1")
    try:
        yield f"http://127.0.0.1:{hub_port}/hub/api/{instance_relay.RELAY_PATH}", standin
    finally:
        for s in servers:
            s.stop()


async def call(url: str, method: str = "GET", token: str | None = "token t-alice", **kw):
    headers = {**({"Authorization": token} if token else {}), **kw.pop("headers", {})}
    return await AsyncHTTPClient().fetch(url, method=method, headers=headers, raise_error=False, **kw)


async def test_presence_and_room_reach_the_service_with_only_the_token() -> None:
    async with relayed() as (base, standin):
        await presence_and_room(base, standin)


async def presence_and_room(base: str, standin: StandIn) -> None:
    body = json.dumps({"sessions": [{"user": "alice", "channel": "desktop"}], "events": []})
    r = await call(base + "api/instances/alice/my%20vm/presence", "POST", body=body,
                   headers={"Cookie": "jupyterhub-session-id=secret", "Content-Type": "application/json"})
    assert r.code == 200, r.body
    assert json.loads(r.body) == {"owner": "alice", "server": "my vm", "channel": "presence", "version": "v2"}
    seen = standin.seen[-1]
    assert seen["path"] == f"{PREFIX}api/instances/alice/my%20vm/presence" and seen["body"] == body.encode()
    assert seen["headers"]["Authorization"] == "token t-alice"
    assert "Cookie" not in seen["headers"], "the relay never forwards cookies"

    r = await call(base + "api/instances/alice/vm/room?wait=25&version=v1")
    assert r.code == 200 and json.loads(r.body)["channel"] == "room"
    assert standin.seen[-1]["query"] == "wait=25&version=v1"


async def test_the_services_refusal_reaches_the_instance_unchanged() -> None:
    async with relayed() as (base, _):
        r = await call(base + "api/instances/alice/vm/room", token="token bad")
    assert r.code == 403 and json.loads(r.body)["message"] == "Only the instance itself may report on it."


@pytest.mark.parametrize("method, path, token, body, status, message", [
    ("GET", "api/instances/alice/vm/room", None, None, 401, "needs the server's token"),
    ("GET", "api/instances/alice/vm/presence", "token t", None, 405, "Use POST"),
    ("POST", "api/instances/alice/vm/room", "token t", b"{}", 405, "Use GET"),
    ("POST", "api/instances/alice/vm/presence", "token t", b"x" * (instance_relay.MAX_BODY + 1), 413, "too large"),
    ("GET", "api/instances/alice/vm/members", "token t", None, 404, ""),  # only the channel is relayed
    ("GET", "api/instances/alice/vm/../../me", "token t", None, 404, ""),
], ids=["no-token", "get-presence", "post-room", "too-large", "members", "dot-dot"])
async def test_bad_calls_are_refused_before_the_service(method, path, token, body, status, message) -> None:
    async with relayed() as (base, standin):
        r = await call(base + path, method, token=token, body=body, allow_nonstandard_methods=True)
    assert r.code == status, r.body
    if message:
        assert message in json.loads(r.body)["message"]
    assert standin.seen == []


async def test_a_service_that_is_down_is_a_502_with_a_message() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    hub_port = free_port()
    app = web.Application([(f"/hub{p}", h) for p, h in instance_relay.handlers],
                          services={"visa-collab": SimpleNamespace(url=dead, prefix=PREFIX)})
    server = HTTPServer(app)
    server.listen(hub_port, "127.0.0.1")
    try:
        r = await call(f"http://127.0.0.1:{hub_port}/hub/api/visa/collab/api/instances/alice/vm/room")
        assert r.code == 502 and "not reachable" in json.loads(r.body)["message"]
    finally:
        server.stop()


def spawner_env(bind_url: str, connect_url: str = "", spawner_connect_url: str | None = None) -> dict[str, str]:
    """The environment JupyterHub's own Spawner.get_env gives an instance, with the collab settings."""
    hub = Hub(base_url="/hub/", bind_url=bind_url)
    if connect_url:
        hub.connect_url = connect_url  # JupyterHub.hub_connect_url
    sp = Spawner(user=SimpleNamespace(name="alice", url="/user/alice/"), hub=hub,
                 hub_connect_url=spawner_connect_url)  # Spawner.hub_connect_url
    sp.environment = {"VISA_COLLAB_URL": instance_relay.instance_url}
    return sp.get_env()


def relayed_path(collab_url: str) -> str:
    """The hub-side path (without /hub) a presence report from this URL arrives at, if relayed."""
    path = urlsplit(collab_url).path + "api/instances/alice/vm/presence"
    assert path.startswith("/hub/")
    pattern = instance_relay.handlers[0][0]
    return path[len("/hub"):] if re.fullmatch(pattern, path[len("/hub"):]) else ""


@pytest.mark.parametrize("bind, connect, spawner_connect", [
    ("http://127.0.0.1:8081", "", None),  # sandbox, qemu: loopback (rewritten by each backend)
    ("http://0.0.0.0:8081", "https://hub.internal.example", None),  # JupyterHub.hub_connect_url
    ("http://0.0.0.0:8081", "", "http://10.20.0.5:8081"),  # Spawner.hub_connect_url
], ids=["loopback", "hub-connect-url", "spawner-connect-url"])
def test_the_collab_url_is_on_the_hub_api_url_the_instance_is_given(bind, connect, spawner_connect) -> None:
    env = spawner_env(bind, connect, spawner_connect)
    api, collab = urlsplit(env["JUPYTERHUB_API_URL"]), urlsplit(env["VISA_COLLAB_URL"])
    assert (collab.scheme, collab.netloc) == (api.scheme, api.netloc)
    assert collab.path == api.path.rstrip("/") + "/visa/collab/" and relayed_path(env["VISA_COLLAB_URL"])


def test_qemu_guests_reach_the_relay_where_they_reach_the_hub() -> None:
    env = guest_env(spawner_env("http://127.0.0.1:8081"), hub_port=8081)
    api, collab = urlsplit(env["JUPYTERHUB_API_URL"]), urlsplit(env["VISA_COLLAB_URL"])
    assert api.netloc == collab.netloc == f"{HUB_GUEST_ADDRESS}:8081"
    assert relayed_path(env["VISA_COLLAB_URL"])


def json_or_none(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


def test_openstack_user_data_gives_the_relay_on_the_hub_connect_url() -> None:
    env = spawner_env("http://0.0.0.0:8081", connect_url="http://hub.internal.example:8081")
    s = spec()
    s = dataclasses.replace(s, env={**s.env, **{k: env[k] for k in ("JUPYTERHUB_API_URL", "VISA_COLLAB_URL")}})
    cloud_config = yaml.safe_load(base64.b64decode(make_backend("t1").user_data(s)).decode())
    configs = [c for c in map(json_or_none, (f.get("content", "") for f in cloud_config["write_files"]))
               if isinstance(c, dict) and "env" in c]
    (instance_env,) = [c["env"] for c in configs]
    assert instance_env["JUPYTERHUB_API_URL"] == "http://hub.internal.example:8081/hub/api"
    assert instance_env["VISA_COLLAB_URL"] == "http://hub.internal.example:8081/hub/api/visa/collab/"
    assert relayed_path(instance_env["VISA_COLLAB_URL"])
    assert "127.0.0.1" not in json.dumps(configs), "nothing in an OpenStack server's config may point at loopback"
