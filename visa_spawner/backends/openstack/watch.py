"""One listing call per cycle for every server being waited on, however many spawns are in flight.

A burst of 100 spawns that each polled its own server would send 100 GETs per interval to Nova
(and as many token validations to Keystone). Instead, waiters ask `ServerWatch.next(id)` and a
single loop lists the hub's servers by tag (server-side filter) once per interval and wakes every
waiter with its server's current record, or None when the listing no longer shows it.
"""
from __future__ import annotations

import asyncio
import logging

from visa_spawner.backends.openstack.cloud import CloudCalls, list_servers
from visa_spawner.backends.openstack.model import LIST_PAGE


class ServerWatch:
    def __init__(self, calls: CloudCalls, tag: str, interval: float, log: logging.Logger) -> None:
        self.calls, self.tag, self.interval, self.log = calls, tag, interval, log
        self._waiters: dict[str, list[asyncio.Future]] = {}
        self._task: asyncio.Task | None = None
        self.listings = 0

    async def next(self, server_id: str):
        """The server's record from the next listing (None: not listed, i.e. gone)."""
        future = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(server_id, []).append(future)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        try:
            return await future
        finally:
            waiting = self._waiters.get(server_id, [])
            if future in waiting:
                waiting.remove(future)

    async def _run(self) -> None:
        while any(self._waiters.values()):
            try:
                servers = await self.calls.once(
                    lambda conn: {s.id: s for s in list_servers(conn, LIST_PAGE, tags=self.tag)})
                self.listings += 1
            except Exception as e:  # a failed listing: everyone waits for the next one
                self.log.info("OpenStack: listing servers failed (%s); retrying", type(e).__name__)
                await asyncio.sleep(self.interval)
                continue
            waiters, self._waiters = self._waiters, {}
            for server_id, futures in waiters.items():
                for future in futures:
                    if not future.done():
                        future.set_result(servers.get(server_id))
            await asyncio.sleep(self.interval)
