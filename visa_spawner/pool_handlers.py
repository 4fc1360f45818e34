"""`/hub/api/visa/pools/<name>`: the sandbox warm pools of courses (`backends/sandbox/pool.py`).

    PUT    {"plan", "proposal", "materials", "size"}  keep `size` sandboxes ready → 200 the status
    GET                                               → 200 {"name", "size", "ready", "starting", ...}
    DELETE                                            end the pool and its sandboxes → 204

`materials` is a host folder under `WarmPool.materials_roots` (a course's folder), `proposal` ""
or a proposal whose data the hub holds (open data, for a course). Allowed to admins and to tokens
with the scope `custom:visa-pools` (the training service's). Bad bodies get a 400 naming the field.
"""
from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urlsplit

from jupyterhub.apihandlers import APIHandler
from tornado import web

from .backends.sandbox.command import proposal_mount_point
from .backends.sandbox.pool import POOL_NAME, PoolDefinition, PoolError, WarmPool
from .spawner import check_plans, hub_backend

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

    def _pool(self) -> WarmPool:
        if not (SCOPE in self.expanded_scopes or getattr(self.current_user, "admin", False)):
            raise web.HTTPError(403, f"Warm pools are for admins and tokens with the scope {SCOPE}.")
        return hub_backend("sandbox", self.config, self.log).warm_pool

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
        status = self._pool().status(self._name(name))
        if status is None:
            raise web.HTTPError(404, f"No warm pool {name}.")
        self.finish(status)

    async def put(self, name: str) -> None:
        pool, name = self._pool(), self._name(name)
        body = parse_body(self.request.body)
        plans = {p.id: p for p in check_plans(self.config)}
        plan = plans.get(body["plan"])
        if plan is None:
            raise web.HTTPError(400, f"Unknown plan {body['plan'][:64]!r}.")
        if plan.backend != "sandbox":
            raise web.HTTPError(400, "warm pools exist for sandbox plans only")
        if not 0 <= body["size"] <= pool.max_total:
            raise web.HTTPError(400, f"size must be between 0 and {pool.max_total}.")
        data_path = ""
        if body["proposal"]:
            try:
                proposal_mount_point(body["proposal"])
            except ValueError:
                raise web.HTTPError(400, "proposal is not a proposal id.") from None
            data_root = self.config.get("VisaSpawner", {}).get("data_root", "/var/lib/visahub/data")
            data_path = f"{data_root}/{body['proposal']}"
            if not os.path.isdir(data_path):
                raise web.HTTPError(400, f"The data of proposal {body['proposal']} is not on this host.")
        try:
            definition = PoolDefinition(
                name=name, plan=plan, size=body["size"], proposal=body["proposal"], data_path=data_path,
                materials=pool.check_materials(body["materials"]), hub_env=self._hub_env(pool.backend.hub_url_env))
            self.finish(await pool.put(definition))
        except PoolError as e:
            raise web.HTTPError(400, str(e)) from None

    async def delete(self, name: str) -> None:
        if not await self._pool().drain(self._name(name)):
            raise web.HTTPError(404, f"No warm pool {name}.")
        self.set_status(204)
        self.finish()


handlers = [(r"/api/visa/pools/([^/]+)", PoolHandler)]
