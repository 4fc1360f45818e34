"""Deleting an instance's servers until Nova has really forgotten them.

A delete Nova accepted can still leave a server behind: one put in ERROR while it was being
deleted stays in ERROR, and a create the client gave up on (timeout) can complete after the
cleanup looked. So deletes that matter wait until the watch no longer lists the servers,
deleting again any that fell into ERROR, and a failed start is looked at once more later
(`sweep_later`). The reconciler is the backstop after a hub restart.
"""
from __future__ import annotations

import asyncio

from visa_spawner.backends.base import BackendError
from visa_spawner.backends.openstack.cloud import delete_server, find_servers, poll_until


class ServerDeletion:
    """Mixed into `OpenStackBackend`: uses its `cloud_calls`, `watch`, `tag`, `log`, `inflight`,
    `running`, `cleanups` and its delete/request/poll timing traits."""

    def sweep_later(self, name: str) -> None:
        """Schedule a late sweep of `name`, kept referenced so it is never garbage-collected half-way."""
        sweep = asyncio.ensure_future(self._late_sweep(name))
        self.cleanups.add(sweep)
        sweep.add_done_callback(self.cleanups.discard)

    async def _delete_named(self, name: str, *, wait: bool, quiet: bool = False) -> None:
        """Delete every server called `name` (and its floating IPs); wait until Nova forgets them."""
        try:
            servers = await self.cloud_calls.call(find_servers, name, self.tag, doing="finding the server to delete")
            for server in servers:
                await self.cloud_calls.call(delete_server, server.id, doing="deleting the server")
            if self.floating_ip_network:
                await self.cloud_calls.call(lambda c: [c.network.delete_ip(ip) for ip in c.network.ips(
                    description=name)], doing="releasing the floating IP")
            if wait and servers:
                gone = await poll_until(lambda: self._all_gone([s.id for s in servers]), timeout=self.delete_timeout,
                                        first=0, longest=0)  # the watch paces the checks
                if not gone:
                    raise BackendError(f"The cloud did not delete server {name} within {self.delete_timeout:g} s.",
                                       reason="delete-timeout")
        except BackendError as e:
            if not quiet:
                raise
            self.log.error("Server %s may be left behind (the reconciler will retry): %s %s", name,
                           e.message, e.log_detail)

    async def _late_sweep(self, name: str) -> None:
        """A create the client gave up on (timeout) may still complete in Nova after the cleanup
        looked: look once more when any such request has surely ended. Servers of a newer start
        of the same instance are spared; the reconciler is the backstop after a hub restart."""
        await asyncio.sleep(self.request_timeout * 2 + self.poll_interval)
        if name not in self.inflight and name not in self.running:
            # waiting matters: a server put in ERROR while Nova deletes it stays, unless deleted again
            await self._delete_named(name, wait=True, quiet=True)

    async def settle(self) -> None:
        """Until every late sweep scheduled so far has run (tests; an orderly shutdown)."""
        while self.cleanups:
            await asyncio.gather(*list(self.cleanups), return_exceptions=True)

    async def _all_gone(self, ids: list[str]) -> bool:
        for server_id in ids:
            server = await self.watch.next(server_id)
            if server is not None and server.status != "DELETED":
                if server.status == "ERROR" and not server.task_state:
                    await self.cloud_calls.call(delete_server, server_id, doing="deleting the server again")
                return False
        return True
