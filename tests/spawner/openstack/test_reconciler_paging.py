"""The reconciler reads every hub record, however the hub pages its user list: a missed page would
make servers look orphaned, and the reconciler deletes orphans."""
from __future__ import annotations

import asyncio

from visa_spawner.backends.openstack.reconciler import Reconciler

USERS = [{"name": f"u{i:02d}", "servers": {"course-x": {"ready": True}}} for i in range(23)]


class PagedHub(Reconciler):
    """The hub's GET /users, answering at most `hub_max` users a page (JupyterHub.api_page_max_limit)."""

    def __init__(self, hub_max: int, **kwargs) -> None:
        super().__init__(backend=None, openstack_plans=(), windows=None, **kwargs)
        self.hub_max, self.asked = hub_max, []

    async def _api(self, method: str, path: str):
        query = dict(part.split("=") for part in path.split("?", 1)[1].split("&"))
        offset, limit = int(query["offset"]), min(int(query["limit"]), self.hub_max)
        self.asked.append((offset, int(query["limit"])))
        return USERS[offset:offset + limit]


def test_every_record_read_in_pages_of_the_configured_size():
    hub = PagedHub(hub_max=200, page_size=5)
    records = asyncio.run(hub.hub_records())
    assert [owner for owner, _, _ in records] == [u["name"] for u in USERS]
    assert {limit for _, limit in hub.asked} == {5} and len(hub.asked) == 6  # 5 pages, then an empty one ends


def test_a_hub_that_pages_smaller_than_asked_loses_nothing():
    hub = PagedHub(hub_max=4, page_size=10)
    records = asyncio.run(hub.hub_records())
    assert len(records) == 23 and records[-1][0] == "u22"
