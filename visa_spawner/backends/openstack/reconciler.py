"""The reconciler: the hub's records and the cloud's servers agree, whatever crashed in between.

Runs periodically inside the hub process (started by `install` from the hub config), on the hub's
one `OpenStackBackend` (the spawners' own: one pool, one view of the servers being created). Each
cycle: one listing call by the hub's tag (through the backend's bounded pool), and the hub's own view of
its servers through its REST API (a service token with read-only scopes plus `admin:servers` to
stop a record). Then:

- a server no hub record owns (no ready or pending named server maps to its name, and no warm pool
  of this hub holds it) and older than the grace period is deleted — e.g. one left by a hub
  killed in the middle of `start()`, or a previous hub's pooled server that no pool took back
  within `pool_grace` of this hub's start;
- a ready record of an OpenStack plan whose server vanished is stopped through the REST API, so
  the person sees it stopped instead of a dead link;
- each running server's instrument security groups follow the experiment windows
  (`instrument_windows`: attached while the window is open, detached after).

Every action is logged; counts are Prometheus metrics (they appear on the hub's /hub/metrics).
A failing cycle logs and carries on; no token ever reaches a log line.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from prometheus_client import Counter, Gauge
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from traitlets import Float, Integer, Unicode
from traitlets.config import Config, LoggingConfigurable

from visa_spawner.backends.openstack.backend import OpenStackBackend
from visa_spawner.backends.openstack.instrument_windows import InstrumentWindows, running_servers
from visa_spawner.spawner import hub_backend

SERVERS = Gauge("visa_openstack_servers", "Servers of this hub in the cloud at the last reconcile", ["kind"])
DELETED = Counter("visa_openstack_orphans_deleted", "Servers deleted because no hub record owned them")
MARKED = Counter("visa_openstack_records_stopped", "Hub records stopped because their server vanished")
CYCLES = Counter("visa_openstack_reconcile_cycles", "Reconciler cycles", ["result"])
DURATION = Gauge("visa_openstack_reconcile_seconds", "Duration of the last reconciler cycle")

SERVICE = "visa-reconciler"


class Reconciler(LoggingConfigurable):
    """Periodic agreement between hub records and the cloud's servers."""

    interval = Float(60, config=True, help="Seconds between reconciler cycles.")
    page_size = Integer(
        50, config=True, min=1,
        help="Users per hub API request when the reconciler reads the hub's servers. The hub builds "
        "a page in one go on its event loop (200 users held it 0.13-0.2 s), so small pages keep its "
        "API answering others meanwhile.")
    grace = Float(300, config=True, help="Minimum age (s) of a server before it can be deleted as an "
                  "orphan (a spawn in another request may not be recorded yet).")
    pool_grace = Float(
        600, config=True,
        help="Seconds after this hub started during which a warm pool's server that no pool of this "
        "hub holds is spared: a previous hub built it, and the pool put again (the training "
        "service's sweep) takes it back instead of building another.")
    hub_api_url = Unicode("", config=True, help="The hub's REST API URL (…/hub/api).")
    api_token = Unicode("", config=True, help="Token of the visa-reconciler service (set by install()).")

    def __init__(self, backend: OpenStackBackend, openstack_plans: set[str],
                 windows: InstrumentWindows | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backend, self.openstack_plans, self.windows = backend, openstack_plans, windows
        self._task: asyncio.Task | None = None
        self._started = dt.datetime.now(dt.UTC)

    # -- hub side ----------------------------------------------------------------------------------
    async def _api(self, method: str, path: str) -> Any:
        req = HTTPRequest(self.hub_api_url.rstrip("/") + path, method=method, request_timeout=30,
                          headers={"Authorization": f"token {self.api_token}"},
                          body=b"{}" if method == "DELETE" else None, allow_nonstandard_methods=True)
        resp = await AsyncHTTPClient().fetch(req, raise_error=False)
        if resp.code >= 400 and resp.code != 404:
            raise RuntimeError(f"hub API {method} {path.split('?')[0]} answered {resp.code}")
        return json.loads(resp.body or b"null") if resp.code < 300 and resp.body else None

    async def hub_records(self) -> list[tuple[str, str, dict]]:
        """(owner, server name, server model) of every named server, stopped ones included."""
        out, offset = [], 0
        while True:
            page = await self._api("GET", f"/users?include_stopped_servers=1&offset={offset}&limit={self.page_size}")
            for user in page or []:
                for name, model in (user.get("servers") or {}).items():
                    out.append((user["name"], name, model))
            if not page:  # only an empty page ends: the hub may give fewer than asked (page max)
                return out
            offset += len(page)

    # -- one cycle -----------------------------------------------------------------------------------
    async def reconcile(self) -> dict[str, int]:
        t0 = time.monotonic()
        records = await self.hub_records()
        servers = await self.backend.list_managed()
        owned = {self.backend.name_for(u, s) for u, s, m in records if m.get("ready") or m.get("pending")}
        # a shelved server is the disk of a stopped instance: owned while its hub record exists
        recorded = {self.backend.name_for(u, s) for u, s, _ in records}
        owned |= {s["name"] for s in servers
                  if str(s.get("status", "")).startswith("SHELVED") and s["name"] in recorded}
        owned |= self.backend.warm_pool.server_names()  # built ahead for a course, nobody's yet
        by_name = {s["name"]: s for s in servers}
        now = dt.datetime.now(dt.UTC)
        counts = {"servers": len(servers), "orphans": 0, "deleted": 0, "stopped": 0}
        for server in servers:
            if server["name"] in owned or server["name"] in self.backend.inflight:
                continue
            counts["orphans"] += 1
            age = (now - _parse_time(server["created"])).total_seconds()
            if age < self.grace or (server.get("pool") and (now - self._started).total_seconds() < self.pool_grace):
                continue
            self.log.warning("Reconciler: deleting server %s (%s) of %s/%s: no hub record owns it (age %.0fs)",
                             server["name"], server["server_id"], server["owner"], server["server_name"], age)
            await self.backend.delete({"name": server["name"]})
            DELETED.inc()
            counts["deleted"] += 1
        for user, name, model in records:
            plan = (model.get("user_options") or {}).get("plan")
            if (model.get("ready") and not model.get("pending") and plan in self.openstack_plans
                    and self.backend.name_for(user, name) not in by_name
                    and not await self.backend.exists(self.backend.name_for(user, name))):
                self.log.warning("Reconciler: %s/%s is ready in the hub but its server is gone; stopping it",
                                 user, name)
                await self._api("DELETE", f"/users/{quote(user)}/servers/{quote(name)}")
                MARKED.inc()
                counts["stopped"] += 1
        if self.windows is not None:
            running = running_servers(records, by_name, self.backend.name_for, self.openstack_plans)
            counts.update(await self.windows.follow(running))
        SERVERS.labels("managed").set(len(servers) - counts["orphans"])
        SERVERS.labels("orphan").set(counts["orphans"] - counts["deleted"])
        DURATION.set(time.monotonic() - t0)
        self.log.info("Reconciler: %(servers)d servers, %(orphans)d orphans, %(deleted)d deleted, "
                      "%(stopped)d records stopped", counts)
        return counts

    async def run_forever(self) -> None:
        """Cycle every `interval`; a failing cycle is logged (without secrets) and retried."""
        while True:
            try:
                await self.reconcile()
                CYCLES.labels("ok").inc()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                CYCLES.labels("error").inc()
                self.log.error("Reconciler cycle failed: %s: %s", type(e).__name__, str(e)[:300])
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self.run_forever())


def _parse_time(value: str | None) -> dt.datetime:
    if not value:
        return dt.datetime.now(dt.UTC)
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC)


def _hub_authenticator() -> Any:
    """The running hub's authenticator (its catalogue decides the instrument windows), if any."""
    from jupyterhub.app import JupyterHub

    return JupyterHub.instance().authenticator if JupyterHub.initialized() else None


def install(c: Config, *, token_file: Path, first_delay: float = 5.0) -> None:
    """Hub config: a service token for the reconciler and its role; start it once the hub runs.

    Call after `c.OpenStackBackend`, `c.Reconciler`, `c.VisaSpawner.plans` and
    `c.JupyterHub.hub_bind_url` are set. The loop is scheduled on the hub's running event loop
    (JupyterHub loads its config inside it); nothing is scheduled when the config is only read.
    """
    import secrets

    if not token_file.exists():
        token_file.write_text(secrets.token_hex(32))
        token_file.chmod(0o600)
    token = token_file.read_text().strip()
    services = c.JupyterHub.services if "services" in c.JupyterHub else []
    c.JupyterHub.services = [*services, {"name": SERVICE, "api_token": token}]
    roles = c.JupyterHub.load_roles if "load_roles" in c.JupyterHub else []
    c.JupyterHub.load_roles = [*roles, {"name": SERVICE, "services": [SERVICE], "scopes": [
        "list:users", "read:users:name", "read:servers", "admin:servers"]}]
    bind = c.JupyterHub.hub_bind_url if "hub_bind_url" in c.JupyterHub else "http://127.0.0.1:8081"
    c.Reconciler.api_token = token
    if "hub_api_url" not in c.Reconciler:
        c.Reconciler.hub_api_url = bind.rstrip("/") + "/hub/api"
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    plans = c.VisaSpawner.plans if "plans" in c.VisaSpawner else []
    openstack_plans = {p["id"] for p in plans if p.get("backend") == "openstack"}

    def start() -> None:
        # the backend spawners use (created here or by the first spawn, whichever comes first)
        backend = hub_backend("openstack", c)
        if not isinstance(backend, OpenStackBackend):
            raise TypeError(f"the reconciler needs an OpenStackBackend, the hub's 'openstack' is {type(backend)}")
        windows = InstrumentWindows.for_hub(backend.security, _hub_authenticator())
        Reconciler(backend, openstack_plans, windows=windows, config=c).start()

    loop.call_later(first_delay, start)
