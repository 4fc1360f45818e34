"""A deletion the hub answers only after archiving (a stopped VM: about a minute of qemu-img) is not
reported as failed by visa-ops: its DELETE has its own, long timeout; other calls keep theirs."""
from __future__ import annotations

import asyncio

import pytest
from tornado import web
from tornado.httpserver import HTTPServer

from tests.support import free_port
from visa_collab.hubapi import HubError
from visa_ops.ops import OpsHubAPI

ANSWER_AFTER = 1.0  # seconds the stand-in hub takes to answer, as when it archives first


class SlowHub(web.RequestHandler):
    async def get(self, owner: str) -> None:
        await asyncio.sleep(ANSWER_AFTER)
        self.finish({"name": owner, "servers": {}})

    async def delete(self, owner: str, server: str) -> None:
        await asyncio.sleep(ANSWER_AFTER)
        self.application.settings["removed"].append((owner, server, self.request.body))
        self.set_status(204)


def slow_hub() -> tuple[HTTPServer, str, list]:
    """Listening on the calling test's own event loop."""
    removed: list = []
    app = web.Application([(r"/hub/api/users/([^/]+)/servers/([^/]+)", SlowHub),
                           (r"/hub/api/users/([^/?]+)", SlowHub)], removed=removed)
    server, port = HTTPServer(app), free_port()
    server.listen(port, "127.0.0.1")
    return server, f"http://127.0.0.1:{port}/hub/api", removed


async def test_a_slow_deletion_completes_while_reads_keep_their_short_timeout():
    server, url, removed = slow_hub()
    try:
        hub = OpsHubAPI(url, "service-token", timeout=ANSWER_AFTER / 4, retries=1)
        with pytest.raises(HubError) as e:  # a read is not worth waiting for
            await hub.user("alice")
        assert e.value.status == 599
        assert hub.remove_timeout > 60, "a VM's archive takes about a minute on this host"
        assert await asyncio.wait_for(hub.remove_server("alice", "old vm"), 10 * ANSWER_AFTER) == {}
        assert removed == [("alice", "old vm", b'{"remove": true}')]
    finally:
        server.stop()
