"""`/hub/api/visa/pools/<name>`: the warm pools of courses, kept by the backend of the pool's plan:
pre-started sandboxes (`backends/sandbox/pool.py`) or OpenStack servers built ahead
(`backends/openstack/pool.py`). A backend without pools (qemu) answers 400.

    PUT    {"plan", "proposal", "materials", "size"}  keep `size` sandboxes ready → 200 the status
    GET                                               → 200 {"name", "size", "ready", "starting", ...}
    DELETE                                            end the pool and its sandboxes → 204

`materials` is a host folder under `WarmPool.materials_roots` (a course's folder; OpenStack instances
get none), `proposal` "" or a proposal id (a sandbox pool's: one whose data the hub holds, open data
for a course). Allowed to admins and to tokens with the scope `custom:visa-pools` (the training
service's). Bad bodies get a 400 naming the field.
"""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from jupyterhub.apihandlers import APIHandler
from tornado import web
from traitlets.utils.importstring import import_item

from .backends.sandbox.command import proposal_mount_point
from .backends.sandbox.pool import POOL_NAME, PoolDefinition, PoolError, WarmPool
from .spawner import BACKEND_CLASSES, check_plans, hub_backend

if TYPE_CHECKING:
    from .backends.openstack.pool import OpenStackPool

SCOPE = "custom:visa-pools"
CUSTOM_SCOPES = {SCOPE: {"description": "Keep warm pools of pre-started sandboxes for courses."}}
MAX_BODY = 64 * 1024


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a PUT, with its fields typed, or a 400 naming what is wrong (pure)."""
    if len(raw) > MAX_BODY:
        raise web.HTTPError(400, "The body is too large.")
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        raise web.HTTPError(400, "The body is not JSON.") from None
    if not isinstance(body, dict):
        raise web.HTTPError(400, 'The body is a JSON object: {"plan", "proposal", "materials", "size"}.')
    unknown = sorted(set(body) - {"plan", "proposal", "materials", "size"})
    if unknown:
        raise web.HTTPError(400, f"Unknown field(s): {', '.join(unknown)[:200]}.")
    for key in ("plan", "proposal", "materials"):
        if not isinstance(body.get(key, ""), str):
            raise web.HTTPError(400, f"{key} is a string.")
    size = body.get("size")
    if not isinstance(size, int) or isinstance(size, bool):
        raise web.HTTPError(400, "size is a whole number of sandboxes.")
    if not body.get("plan"):
        raise web.HTTPError(400, "plan is required.")
    return {"plan": body["plan"], "proposal": body.get("proposal", ""), "materials": body.get("materials", ""),
            "size": size}


class PoolHandler(APIHandler):
    """One warm pool; admins and `custom:visa-pools` tokens only."""

    def _check_scope(self) -> None:
        if not (SCOPE in self.expanded_scopes or getattr(self.current_user, "admin", False)):
            raise web.HTTPError(403, f"Warm pools are for admins and tokens with the scope {SCOPE}.")

    def _pool_of(self, backend: str) -> WarmPool | OpenStackPool | None:
        """The warm pools of the hub's backend `backend`, or None if that backend keeps none."""
        classes = self.config.get("VisaSpawner", {}).get("backend_classes", BACKEND_CLASSES)
        if backend not in classes or not hasattr(import_item(classes[backend]), "warm_pool"):
            return None  # not made just to be asked: a backend's instance may start things
        return hub_backend(backend, self.config, self.log).warm_pool

    def _pools(self) -> list[WarmPool | OpenStackPool]:
        """The warm pools of every backend of the hub's plans (a pool's name is looked up in each)."""
        backends = sorted({p.backend for p in check_plans(self.config)})
        return [pool for b in backends if (pool := self._pool_of(b)) is not None]

    @staticmethod
    def _name(name: str) -> str:
        if not POOL_NAME.match(name):
            raise web.HTTPError(400, "A pool's name is 1-40 lower-case letters, digits and dashes.")
        return name

    def _hub_env(self, names: list[str]) -> dict[str, str]:
        """The hub URLs an instance is given (JupyterHub's rule for JUPYTERHUB_API_URL): only
        their hosts and ports matter to a pooled sandbox's routes."""
        connect = self.config.get("Spawner", {}).get("hub_connect_url")
        api_url = connect.rstrip("/") + urlsplit(self.hub.api_url).path if connect else self.hub.api_url
        return {name: api_url for name in names}

    async def get(self, name: str) -> None:
        self._check_scope()
        name = self._name(name)
        status = next((s for pool in self._pools() if (s := pool.status(name)) is not None), None)
        if status is None:
            raise web.HTTPError(404, f"No warm pool {name}.")
        self.finish(status)

    async def put(self, name: str) -> None:
        self._check_scope()
        name = self._name(name)
        body = parse_body(self.request.body)
        plans = {p.id: p for p in check_plans(self.config)}
        plan = plans.get(body["plan"])
        if plan is None:
            raise web.HTTPError(400, f"Unknown plan {body['plan'][:64]!r}.")
        pool = self._pool_of(plan.backend)
        if pool is None:
            raise web.HTTPError(400, f"warm pools exist for sandbox and OpenStack plans only; plan "
                                f"{plan.id!r} runs on {plan.backend}")
        if any(other is not pool and other.status(name) for other in self._pools()):
            raise web.HTTPError(400, f"The warm pool {name} is kept by another backend; delete it first.")
        if not 0 <= body["size"] <= pool.max_total:
            raise web.HTTPError(400, f"size must be between 0 and {pool.max_total}.")
        data_path = ""
        if body["proposal"]:
            try:
                proposal_mount_point(body["proposal"])
            except ValueError:
                raise web.HTTPError(400, "proposal is not a proposal id.") from None
        if body["proposal"] and plan.backend == "sandbox":  # its data is mounted from the hub's host
            data_root = self.config.get("VisaSpawner", {}).get("data_root", "/var/lib/visahub/data")
            data_path = f"{data_root}/{body['proposal']}"
            if not os.path.isdir(data_path):
                raise web.HTTPError(400, f"The data of proposal {body['proposal']} is not on this host.")
        hub_env = self._hub_env(getattr(pool.backend, "hub_url_env", ["JUPYTERHUB_API_URL"]))
        try:
            definition = PoolDefinition(
                name=name, plan=plan, size=body["size"], proposal=body["proposal"], data_path=data_path,
                materials=pool.check_materials(body["materials"]), hub_env=hub_env)
            self.finish(await pool.put(definition))
        except PoolError as e:
            raise web.HTTPError(400, str(e)) from None

    async def delete(self, name: str) -> None:
        self._check_scope()
        name = self._name(name)
        drained = [await pool.drain(name) for pool in self._pools()]
        if not any(drained):
            raise web.HTTPError(404, f"No warm pool {name}.")
        self.set_status(204)
        self.finish()


handlers = [(r"/api/visa/pools/([^/]+)", PoolHandler)]
