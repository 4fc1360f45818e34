"""``POST /hub/api/visa/instances/<owner>/<server>/reset``: a course instance back to its materials.

A trainer's "Reset" on the grid (issue 19): the participant's instance is stopped, its home
emptied, and started again; the backend then finds a fresh home and copies the course's materials
into it, exactly as at the first start (`SandboxBackend.create`, `InstanceSpec.materials`), so a
reset instance and a new one cannot differ. Only course instances (``user_options["course"]``)
can be reset: anyone else's home has no materials to go back to.

A backend whose home lives on the machine's own disk and which brings the materials itself to
each new machine (`delivers_materials`: OpenStack, qemu) is reset by deleting the machine after
the stop (OpenStack's server, shelved or not; qemu's overlay disk); the start builds or adopts a
fresh one (OpenStack: from the plan's image or the course's pool; qemu: cold, or a clone of the
memory snapshot) and pushes the materials again (`guest/materials.py`). The person and the
server's name (the instance's identity) stay; the new machine gets a new API token, as every start
does. A backend with neither answers 409 with the reason.
"""
from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

from jupyterhub.apihandlers import APIHandler
from jupyterhub.scopes import needs_scope
from tornado import web

from .backends.base import Backend, BackendError
from .backends.sandbox.state import SandboxState

STOP_TIMEOUT = 60.0


def home_of(backend: Backend, state: dict) -> Path | None:
    """The instance's home on the hub's host, for backends that keep it there (the sandbox); None
    for backends whose home lives on a disk image (qemu) or in a cloud (OpenStack)."""
    from .backends.sandbox.backend import SandboxBackend  # the hub's config imports this module early

    if isinstance(backend, SandboxBackend):
        return Path(backend.state_dir) / "homes" / backend.account_of(SandboxState.from_dict(state))
    return None


def empty_home(home: Path) -> None:
    """Remove the home (blocking: run it in an executor); the next start makes a fresh one."""
    shutil.rmtree(home, ignore_errors=True)
    if home.exists():
        raise OSError(f"{home} could not be removed")


class ResetAPIHandler(APIHandler):
    """Stop, empty the home, start: the materials are copied again by the backend at start."""

    @needs_scope("admin:servers")
    async def post(self, user_name: str, server_name: str) -> None:
        user = self.find_user(user_name)
        if user is None or server_name not in user.orm_user.orm_spawners:
            raise web.HTTPError(404, "No such instance.")
        spawner = user.spawners[server_name]
        course = (spawner.user_options or {}).get("course")
        if not course:
            raise web.HTTPError(409, "Only a course instance can be reset to its materials.")
        if spawner.pending:
            raise web.HTTPError(409, f"This instance is busy ({spawner.pending}); try again in a moment.")
        identity = getattr(spawner, "identity", None)
        backend = spawner.backend(identity.backend) if identity is not None else None
        state = {**spawner.backend_state, **identity.to_dict()} if identity is not None else {}
        home = home_of(backend, state) if backend is not None else None
        by_delete = home is None and bool(getattr(backend, "delivers_materials", False))
        if backend is not None and home is None and not by_delete:
            raise web.HTTPError(409, f"Instances on the {identity.backend} backend cannot be reset to the course "
                                "materials: the hub does not deliver materials to them. The participant can "
                                "delete the instance and start the course's instance again.")
        self.log.info("Reset of %s/%s (course %s) asked by %s", user_name, server_name, course,
                      self.current_user.name)
        if spawner.active:
            await self.stop_single_user(user, server_name)
            await self._stopped(spawner)
        if home is not None:
            await asyncio.get_running_loop().run_in_executor(None, empty_home, home)
        elif by_delete:  # the home is the server's disk: the next start gets a fresh server
            try:
                await backend.delete(state)
            except BackendError as e:
                self.log.warning("Reset of %s/%s: deleting the server failed: %s", user_name, server_name, e.log_detail)
                raise web.HTTPError(502, f"{e.message} The instance is stopped; nothing was reset.") from None
        options = dict(spawner.user_options or {})
        await self.spawn_single_user(user, server_name, spawner.display_name or "", options=options)
        self.set_status(200 if spawner.ready else 202)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"owner": user_name, "server": server_name, "course": course,
                                "ready": bool(spawner.ready), "pending": spawner.pending}))

    @staticmethod
    async def _stopped(spawner) -> None:
        deadline = asyncio.get_running_loop().time() + STOP_TIMEOUT
        while spawner.active:
            if asyncio.get_running_loop().time() > deadline:
                raise web.HTTPError(504, "The instance did not stop in time; nothing was reset.")
            await asyncio.sleep(0.1)


handlers = [(r"/api/visa/instances/([^/]+)/([^/]+)/reset", ResetAPIHandler)]
