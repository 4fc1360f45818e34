"""Every openstacksdk call off the hub's event loop, bounded, timed out and retried.

openstacksdk is blocking (requests underneath). A hub serving hundreds of people must never wait
on the cloud in its event loop, and a burst of spawns must not open hundreds of connections at
once. So every call goes through `CloudCalls.call`: one attempt = one job on a small thread pool
(each worker thread has its own `Connection`, all sharing one keystoneauth session and token), each HTTP
request has a timeout, and transient failures are retried here, in the event loop, with
exponential backoff and jitter — a sleeping retry never holds a worker thread.
"""
from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import openstack
from openstack import exceptions as sdk_exc

from visa_spawner.backends.openstack.errors import cloud_message, is_transient, to_backend_error

T = TypeVar("T")


@dataclass
class CloudSettings:
    """How to reach the cloud: a clouds.yaml entry and/or explicit auth (application credentials)."""

    cloud: str = ""
    config_file: str = ""
    auth: dict = field(default_factory=dict)  # e.g. auth_type=v3applicationcredential + auth dict
    region: str = ""
    compute_microversion: str = "2.90"
    endpoint_overrides: dict = field(default_factory=dict)  # service type -> URL
    request_timeout: float = 30.0

    def region_config(self):
        """The cloud region (blocking to build). Connections made from the same region object
        share its keystoneauth session, hence one token for the whole pool: Keystone password
        authentication is expensive and a burst must not repeat it per thread."""
        kwargs: dict[str, Any] = {
            "compute_api_version": self.compute_microversion,
            "api_timeout": self.request_timeout,
            "connect_retries": 0, "status_code_retries": 0,  # we retry, without holding a thread
        }
        if self.region:
            kwargs["region_name"] = self.region
        for service, url in self.endpoint_overrides.items():
            if service != "identity":
                kwargs[f"{service.replace('-', '_')}_endpoint_override"] = url
        auth = dict(self.auth)
        if "identity" in self.endpoint_overrides:
            auth["auth_url"] = self.endpoint_overrides["identity"]
        if auth:
            kwargs["auth"] = auth
        config = openstack.config.OpenStackConfig(config_files=[self.config_file] if self.config_file else None)
        return config.get_one(cloud=self.cloud or None, **kwargs)


class CloudCalls:
    """Run blocking SDK functions `fn(conn, *args)` in a bounded pool with retries."""

    def __init__(self, settings: CloudSettings, *, workers: int, attempts: int, backoff: float,
                 log: logging.Logger) -> None:
        self.settings = settings
        self.attempts, self.backoff, self.log = attempts, backoff, log
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openstack")
        self._local = threading.local()
        self._region = None
        self._region_lock = threading.Lock()
        self.calls = 0  # for tests and metrics: how many attempts were made

    def _conn(self) -> openstack.connection.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with self._region_lock:
                if self._region is None:
                    self._region = self.settings.region_config()
            conn = self._local.conn = openstack.connection.Connection(config=self._region)
        return conn

    def _run(self, fn: Callable[..., T], args: tuple) -> T:
        self.calls += 1
        return fn(self._conn(), *args)

    async def once(self, fn: Callable[..., T], *args: Any) -> T:
        """One attempt, off the event loop (for callers that handle failures themselves)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, fn, args)

    async def call(self, fn: Callable[..., T], *args: Any, doing: str, attempts: int | None = None) -> T:
        """`fn(conn, *args)` with retries on transient failures; BackendError after the last one.

        Only for idempotent calls (GET, DELETE, PUT-like actions); creation is made idempotent
        by the caller (deterministic name: look before creating again).
        """
        attempts = attempts or self.attempts
        for attempt in range(1, attempts + 1):
            try:
                return await self.once(fn, *args)
            except Exception as e:
                if not is_transient(e) or attempt == attempts:
                    raise to_backend_error(e, doing) from None
                delay = self.delay(attempt)
                self.log.info("OpenStack: %s failed (%s: %s); retry %d/%d in %.1fs", doing,
                              type(e).__name__, cloud_message(e)[:120], attempt, attempts - 1, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def delay(self, attempt: int) -> float:
        """Exponential backoff with full jitter, capped at 30 s."""
        return random.uniform(0.5, 1.0) * min(30.0, self.backoff * 2 ** (attempt - 1))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


async def poll_until(check: Callable[[], Any], *, timeout: float, first: float = 0.2,
                     longest: float = 3.0) -> Any:
    """Await `check()` until it returns something truthy; growing intervals; None on timeout."""
    deadline, interval = time.monotonic() + timeout, first
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(interval * 1.5, longest)


def list_servers(conn: Any, page: int = 50, **query: Any) -> list:
    """Server details matching `query`, `page` at a time, in a blocking thread.

    Why pages: Nova answers a page with one Neutron query naming every listed server's ports in its
    URL; a whole-project listing can exceed the API servers' request-line limit (the lab's Neutron
    refuses over 4094 bytes, about 85 servers) and fail with a 500. Why not openstacksdk's own
    paging (`limit=`): it asks once more after every page, and that request sometimes came back
    with its own marker ("Endless pagination loop detected") while servers were being created and
    deleted. Here a page shorter than `page`, or one with nothing new, ends the listing.
    """
    out: list = []
    seen: set[str] = set()
    marker = None
    while True:
        pages = conn.compute.servers(details=True, limit=page, **({"marker": marker} if marker else {}), **query)
        batch: list = []
        try:  # stop before the SDK asks for another page; after a short page it asks anyway
            for server in pages:
                batch.append(server)
                if len(batch) == page:
                    break
        except openstack.exceptions.SDKException as e:  # that extra ask got its own marker back
            if "pagination loop" not in str(e).lower():
                raise
        new = [s for s in batch if s.id not in seen]
        out += new
        seen.update(s.id for s in new)
        if len(batch) < page or not new:
            return out
        marker = batch[-1].id


# -- blocking SDK steps the backend runs in the pool as fn(conn, ...) --------------------------------
def get_server(conn, server_id: str):
    try:
        return conn.compute.get_server(server_id)
    except sdk_exc.NotFoundException:
        return None


def find_servers(conn, name: str, tag: str) -> list:
    """The servers of one name: a few at most, so one page. Not paged on purpose: with `limit`,
    openstacksdk asks once more after every page, and under fault injection that extra request
    once ended a spawn with openstacksdk's "Endless pagination loop detected" (cause not pinned)."""
    return list(conn.compute.servers(details=True, name=f"^{name}$", tags=tag))


def delete_server(conn, server_id: str) -> None:
    try:
        conn.compute.delete_server(server_id)
    except sdk_exc.NotFoundException:
        pass


def absolute_limits(conn) -> dict[str, dict[str, int]]:
    """Nova's absolute limits as {resource: {"limit", "used"}} (limit -1: unlimited)."""
    absolute = conn.compute.get_limits().absolute
    return {name: {"limit": int(getattr(absolute, limit) or 0), "used": int(getattr(absolute, used) or 0)}
            for name, limit, used in (("instances", "instances", "instances_used"),
                                      ("cores", "total_cores", "total_cores_used"),
                                      ("ram_mb", "total_ram", "total_ram_used"))}


def attach_floating_ip(conn, server, network_id: str) -> str:
    """A new floating IP on `network_id` for the server's first port; its address."""
    ports = list(conn.network.ports(device_id=server.id))
    ip = conn.network.create_ip(floating_network_id=network_id, description=server.name,
                                **({"port_id": ports[0].id} if ports else {}))
    return ip.floating_ip_address
