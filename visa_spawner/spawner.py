"""VisaSpawner: one JupyterHub named server = one analysis instance for one proposal.

The spawner owns the lifecycle (options, progress, errors, saved state); the backend named by
the chosen plan does the infrastructure work through the small protocol in `backends.base`.
"""
from __future__ import annotations

import asyncio
from typing import Any

from jupyterhub.spawner import SpawnException, Spawner
from jupyterhub.utils import random_port
from tornado.web import HTTPError
from traitlets import Dict, List, Unicode, default, import_item

from .backends.base import Backend, BackendError, InstanceSpec, InstanceStatus, Plan
from .options import KEYBOARDS, SCREENS, OptionError, restart_form, validate_request
from .plans import parse_plans

DEFAULT_PLANS = [
    {"id": "sandbox-small", "display_name": "Small sandbox", "backend": "sandbox", "cpus": 1,
     "memory_mb": 2048, "default": True, "description": "1 CPU, 2 GB: notebooks and light analysis"},
    {"id": "sandbox-large", "display_name": "Large sandbox", "backend": "sandbox", "cpus": 2,
     "memory_mb": 8192, "description": "2 CPUs, 8 GB: reduction of a full data set"},
]


class VisaSpawner(Spawner):
    """Spawns a proposal's analysis instance on the backend of the chosen plan."""

    plans = List(
        Dict(), default_value=DEFAULT_PLANS, config=True,
        help="Plans offered on the creation form: dicts with id, display_name, backend, cpus, "
        "memory_mb and optional image, description, default, roles (facility roles allowed; "
        "empty = all).",
    )
    backend_classes = Dict(
        {
            "sandbox": "visa_spawner.backends.sandbox.backend.SandboxBackend",
            "qemu": "visa_spawner.backends.qemu.backend.QemuBackend",
            "openstack": "visa_spawner.backends.openstack.backend.OpenStackBackend",
        },
        config=True,
        help="Backend name → import path of its class. A plan names its backend.",
    )
    data_root = Unicode(
        "/var/lib/visahub/data", config=True,
        help="Host directory holding each proposal's experimental data as <data_root>/<proposal>/, "
        "mounted read-only into the instance.",
    )
    screens = List(Unicode(), default_value=list(SCREENS), config=True, help="Screen sizes offered (WxH).")
    keyboards = Dict(KEYBOARDS, config=True, help="Keyboard layouts offered: XKB layout → label.")
    roles_without_proposal = List(
        Unicode(), default_value=["STAFF", "ADMIN"], config=True,
        help="Facility roles that may create an instance attached to no proposal (no data mounted).",
    )

    backend_state = Dict(help="What the backend needs to find this instance again (persisted).")
    _backends: dict[str, Backend] = {}  # shared per hub process: backends hold process handles

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._progress_events: list[dict] = []
        self._progress_changed = asyncio.Condition()

    @default("cmd")
    def _cmd_default(self) -> list[str]:
        return ["jupyterhub-singleuser"]

    # -- the hub's spawn page: never a start on a GET (a link on another site) -------------------
    @default("options_form")
    def _options_form_default(self):
        return lambda spawner: restart_form(spawner.display_name or spawner.name, spawner.orm_spawner.user_options)

    def options_from_query(self, query_data: dict) -> dict:
        raise HTTPError(405, "Instances are not started by following a link: use the home page.")

    def options_from_form(self, form_data: dict) -> dict:
        """The spawn page's start button: the instance's own settings (the form has no fields)."""
        return dict(self.orm_spawner.user_options or {})

    # -- configuration -------------------------------------------------------------------------
    def plan_catalogue(self) -> list[Plan]:
        return parse_plans(self.plans, self.backend_classes.keys())

    def backend(self, name: str) -> Backend:
        """The hub-wide backend instance for `name` (created once, configured from the hub config)."""
        if name not in self._backends:
            cls = import_item(self.backend_classes[name])
            VisaSpawner._backends[name] = cls(config=self.config, log=self.log)  # hub-wide, not tied to one spawner
        return self._backends[name]

    async def entitlements(self) -> dict[str, Any]:
        """The owner's facility entitlements, computed by the VISA authenticator at login/refresh."""
        auth_state = await self.user.get_auth_state() or {}
        return auth_state.get("visa") or {}

    # -- state ---------------------------------------------------------------------------------
    def get_state(self) -> dict:
        state = super().get_state()
        if self.backend_state:
            state["backend"] = self.backend_state
        return state

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.backend_state = state.get("backend", {})

    def clear_state(self) -> None:
        super().clear_state()
        self.backend_state = {}

    # -- progress ------------------------------------------------------------------------------
    def emit(self, percent: int, message: str) -> None:
        """Record a real stage of the spawn for the progress bar."""
        self.log.info("%s: %s", self._log_name, message)
        self._progress_events.append({"progress": percent, "message": message})
        asyncio.ensure_future(self._notify())

    async def _notify(self) -> None:
        async with self._progress_changed:
            self._progress_changed.notify_all()

    async def progress(self):
        """Every stage of the current spawn, to every listener, however late it connects."""
        events, seen = self._progress_events, 0
        while True:
            if events is not self._progress_events:  # a new spawn started: follow it from its start
                events, seen = self._progress_events, 0
            while seen < len(events):
                seen += 1
                yield events[seen - 1]
            if not self._spawn_pending:
                return
            async with self._progress_changed:
                try:
                    await asyncio.wait_for(self._progress_changed.wait(), 1)
                except asyncio.TimeoutError:
                    pass

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> tuple[str, int]:
        self._progress_events = []
        self.emit(5, "Checking the request against your proposals and plans")
        entitlements = await self.entitlements()
        try:
            request = validate_request(
                self.user_options, entitlements=entitlements,
                plans=self.plan_catalogue(), existing={}, screens=self.screens,
                keyboards=self.keyboards, roles_without_proposal=self.roles_without_proposal, new=False,
            )
        except OptionError as e:
            raise SpawnException(str(e), reason="options") from None
        plan = next(p for p in self.plan_catalogue() if p.id == request.plan)
        proposal = next((p for p in entitlements.get("proposals", []) if p.get("id") == request.proposal), {})
        backend = self.backend(plan.backend)
        self.port = random_port()
        env = self.get_env()
        env.update({
            "VISA_PROPOSAL": request.proposal, "VISA_PLAN": plan.id, "VISA_SCREEN": request.screen,
            "VISA_KEYBOARD": request.keyboard, "VISA_INSTANCE_NAME": self.display_name or self.name,
        })
        spec = InstanceSpec(
            owner=self.user.name, server_name=self.name, instance_id=f"{self.user.name}/{self.name}",
            display_name=self.display_name or self.name, proposal=request.proposal, plan=plan,
            command=tuple(self.cmd + self.get_args()), env=env, port=self.port,
            data_path=f"{self.data_root}/{request.proposal}" if request.proposal else "", screen=request.screen,
            keyboard=request.keyboard, proposal_title=str(proposal.get("title", "")),
            roles=tuple(map(str, entitlements.get("roles", []))),
            instruments=tuple(map(str, proposal.get("instruments", []))),
        )
        try:
            state = await backend.create(spec, self.emit)
        except BackendError as e:
            self.log.warning("%s: spawn failed (%s): %s %s", self._log_name, e.reason, e.message, e.log_detail)
            raise SpawnException(e.message, reason=e.reason) from None
        self.backend_state = {**state, "plan": plan.id}
        return await backend.address(state)

    def get_args(self) -> list[str]:
        # the data lives outside home: serve "/" (the sandbox's own small tree) and open in home
        return super().get_args() + ["--ServerApp.root_dir=/"]

    async def poll(self) -> int | None:
        if not self.backend_state:
            return 0
        backend = self.backend(self.backend_state.get("backend", "sandbox"))
        status = await backend.status(self.backend_state)
        # UNKNOWN (the cloud did not answer) is not "stopped": the hub would drop a live instance
        return 0 if status is InstanceStatus.STOPPED else None

    async def stop(self, now: bool = False) -> None:
        if self.backend_state:
            await self.backend(self.backend_state.get("backend", "sandbox")).stop(self.backend_state, now=now)

    async def delete_forever(self) -> None:
        """Remove the instance's home and account: called by the hub when the server is deleted."""
        plan_backend = "sandbox"
        for plan in self.plan_catalogue():
            if plan.id == (self.user_options or {}).get("plan"):
                plan_backend = plan.backend
        await self.backend(plan_backend).delete(
            {"backend": plan_backend, "owner": self.user.name, "server_name": self.name}
        )
