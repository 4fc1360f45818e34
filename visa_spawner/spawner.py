"""VisaSpawner: one JupyterHub named server = one analysis instance for one proposal.

The spawner owns the lifecycle (options, progress, errors, saved state); the backend named by
the chosen plan does the infrastructure work through the small protocol in `backends.base`.

Saved state: `{"identity": {backend, owner, server_name}, "backend": <the backend's own dict>}`.
The identity outlives a stop (JupyterHub calls `clear_state` then), so a later delete reaches the
backend that holds the instance's disk or home; an instance whose backend is not configured is an
error, never handed to another backend.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from jupyterhub.spawner import Spawner, SpawnException
from jupyterhub.utils import random_port
from sqlalchemy import inspect
from sqlalchemy.orm import object_session
from sqlalchemy.orm.attributes import flag_modified
from tornado.web import HTTPError
from traitlets import Bool, Dict, Float, List, TraitError, Unicode, default, import_item, observe, validate
from traitlets.config import Config

from . import metrics
from .archives import Archive, archive_instance, find_archive, list_archives, restore_source
from .backends.base import (
    ArchiveNotSupported,
    Backend,
    BackendError,
    InstanceIdentity,
    InstanceSpec,
    InstanceStatus,
    Plan,
    UnknownBackendError,
)
from .course import course_seat, download_open, seat_request
from .options import KEYBOARDS, SCREENS, OptionError, restart_form, validate_request
from .plan_switch import read_disabled
from .plans import parse_plans, plan_offer
from .quota_overrides import effective_quota, read_overrides

DEFAULT_PLANS = [
    {"id": "sandbox-small", "display_name": "Small sandbox", "backend": "sandbox", "cpus": 1,
     "memory_mb": 2048, "default": True, "description": "1 CPU, 2 GB: notebooks and light analysis"},
    {"id": "sandbox-large", "display_name": "Large sandbox", "backend": "sandbox", "cpus": 2,
     "memory_mb": 8192, "description": "2 CPUs, 8 GB: reduction of a full data set"},
]
BACKEND_CLASSES = {
    "sandbox": "visa_spawner.backends.sandbox.backend.SandboxBackend",
    "qemu": "visa_spawner.backends.qemu.backend.QemuBackend",
    "openstack": "visa_spawner.backends.openstack.backend.OpenStackBackend",
}


def hub_backend(name: str, config: Config, log: logging.Logger | None = None,
                classes: Mapping[str, str] | None = None) -> Backend:
    """The hub's one backend called `name`, shared by every spawner and the OpenStack reconciler.

    `classes` defaults to `VisaSpawner.backend_classes` as configured in `config`.
    """
    if classes is None:
        classes = config.get("VisaSpawner", {}).get("backend_classes", BACKEND_CLASSES)
    if name not in classes:
        raise UnknownBackendError(
            f"no backend {name!r} in VisaSpawner.backend_classes (configured: {', '.join(sorted(classes))})")
    return import_item(classes[name]).instance(config=config, **({"log": log} if log else {}))


def check_plans(config: Config) -> list[Plan]:
    """The plan catalogue `config` gives VisaSpawner; ValueError naming the bad entry.

    For hub configuration files, so a bad plan stops the hub at start (a spawner is only created
    when someone first looks at their servers).
    """
    section = config.get("VisaSpawner", {})
    return parse_plans(section.get("plans", DEFAULT_PLANS), section.get("backend_classes", BACKEND_CLASSES))


metrics.bind_plans(BACKEND_CLASSES, check_plans)


class VisaSpawner(Spawner):
    """Spawns a proposal's analysis instance on the backend of the chosen plan."""

    plans = List(
        Dict(), default_value=DEFAULT_PLANS, config=True,
        help="Plans offered on the creation form: dicts with id, display_name, backend, cpus, "
        "memory_mb and optional image, description, default, roles (facility roles allowed; "
        "empty = all).",
    )
    backend_classes = Dict(
        BACKEND_CLASSES, config=True,
        help="Backend name → import path of its class. A plan names its backend. Keep the names of "
        "backends that still hold instances: their instances cannot be stopped or deleted without them.",
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

    plan_switch_file = Unicode(
        "", config=True,
        help="JSON file of the plans an admin switched off ({\"disabled\": [ids]}, written by the ops "
        "console): not offered, not started; running instances are untouched. Re-read when it changes, "
        "no restart. Empty: every plan is on.",
    )

    quota_overrides_file = Unicode(
        "", config=True,
        help="JSON file of per-person instance quotas set by an admin ({\"quota\": {user: -1..1000}}, written "
        "by the ops console): each replaces the catalogue's quota (-1 unlimited, 0 no new instance). Re-read "
        "when it changes, no restart. Empty: the catalogue's quotas apply.",
    )

    archive_dir = Unicode(
        "", config=True,
        help="Where deleted instances' homes are archived (<archive_dir>/<user>/<server>-<UTC stamp>.<ext> "
        "and a JSON sidecar), for their owners to download or restore. Empty: no archives.",
    )
    archive_on_delete = Bool(
        True, config=True,
        help="Archive an instance's home (sandbox) or disk (qemu) before deleting it. If the archive fails, "
        "or the backend cannot archive (openstack), the instance's data is kept and the deletion raises.",
    )
    archive_retention_days = Float(
        30, config=True,
        help="Days an archive is kept: shown on the home page as its 'kept until' date (the operations "
        "sweep prunes older ones).",
    )

    training_api_url = Unicode(
        "", config=True,
        help="visa-training's internal API (…/services/visa-training/api/internal/), asked who takes part in "
        "a course when a course instance (server course-<id>, user_options {\"course\": id}) starts. Empty: "
        "course instances cannot start.")
    training_api_token = Unicode(
        "", config=True,
        help="The shared secret sent to training_api_url (Authorization: token …); never logged.")

    backend_state = Dict(help="What the backend needs to find this instance again (persisted).")

    def __init__(self, **kwargs: Any) -> None:
        self._catalogue: list[Plan] | None = None
        #: which backend holds this instance; survives clear_state (see the module docstring)
        self.identity: InstanceIdentity | None = None
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
    @validate("plans")
    def _validate_plans(self, proposal: dict) -> list[dict]:
        self._catalogue = self._parse_plans(proposal["value"])
        return proposal["value"]

    @observe("backend_classes")
    def _recheck_plans(self, change: dict) -> None:
        self._catalogue = self._parse_plans(self.plans)

    def _parse_plans(self, raw: list[dict]) -> list[Plan]:
        try:
            return parse_plans(raw, self.backend_classes)
        except ValueError as e:
            raise TraitError(f"VisaSpawner.plans: {e}") from None

    def plan_catalogue(self) -> list[Plan]:
        """The configured plans, parsed and checked once (at configuration, not at each spawn)."""
        if self._catalogue is None:  # the default plans: never went through the validator
            self._catalogue = self._parse_plans(self.plans)
        return self._catalogue

    def backend(self, name: str) -> Backend:
        """The hub's one backend called `name`; UnknownBackendError naming this instance if none."""
        try:
            return hub_backend(name, self.config, self.log, self.backend_classes)
        except UnknownBackendError:
            raise UnknownBackendError(
                f"{self._log_name} belongs to the {name!r} backend, which this hub does not configure "
                f"(VisaSpawner.backend_classes: {', '.join(sorted(self.backend_classes))}). Nothing was done: "
                "configure that backend again to stop or delete the instance."
            ) from None

    def disabled_plans(self) -> set[str]:
        """Ids of the plans switched off now (`plan_switch_file`)."""
        return read_disabled(self.plan_switch_file) if self.plan_switch_file else set()

    async def gpus_free(self, plans: list[Plan] | None = None) -> dict[str, int]:
        """Free GPUs of each backend serving a GPU plan (backends of other plans are not asked)."""
        wanted = {p.backend for p in (plans or self.plan_catalogue()) if p.gpus}
        free = {}
        for name in sorted(wanted):
            try:
                free[name] = int((await self.backend(name).capacity()).get("gpus_free", 0))
            except Exception:  # a backend that cannot say has none to offer
                self.log.exception("Capacity of the %s backend unknown: its GPU plans are greyed out", name)
                free[name] = 0
        return free

    async def plan_offer(self) -> list[tuple[Plan, str]]:
        """For the home page: the plans switched on, each with why it is greyed out ('' if not)."""
        return plan_offer(self.plan_catalogue(), self.disabled_plans(), await self.gpus_free())

    async def entitlements(self) -> dict[str, Any]:
        """The owner's facility entitlements, computed by the VISA authenticator at login/refresh,
        with the quota an admin may have overridden since (`quota_for`)."""
        auth_state = await self.user.get_auth_state() or {}
        visa = auth_state.get("visa") or {}
        return {**visa, "quota": self.quota_for(visa)}

    def quota_for(self, entitlements: Mapping[str, Any]) -> int:
        """The owner's quota now: an admin's override (`quota_overrides_file`) beats the catalogue's."""
        overrides = read_overrides(self.quota_overrides_file) if self.quota_overrides_file else {}
        return effective_quota(entitlements, overrides.get(self.user.name))

    def course_download_open(self, options: Mapping[str, Any] | None) -> bool:
        """For the home page: may the owner still download this course instance's work?"""
        return download_open(options)

    # -- state ---------------------------------------------------------------------------------
    def get_state(self) -> dict:
        state = super().get_state()
        if self.identity is not None:
            state["identity"] = self.identity.to_dict()
        if self.backend_state:
            state["backend"] = self.backend_state
        return state

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.backend_state = dict(state.get("backend") or {})
        if state.get("identity"):
            self.identity = InstanceIdentity.from_dict(state["identity"])
        elif self.backend_state.get("backend"):  # saved before identities: the backend's dict names it
            self.identity = InstanceIdentity(
                backend=str(self.backend_state["backend"]),
                owner=str(self.backend_state.get("owner") or self.user.name),
                server_name=str(self.backend_state.get("server_name", self.name)))
        else:
            self.identity = None

    def clear_state(self) -> None:
        """Forget the running instance; keep its identity (the instance itself still exists)."""
        super().clear_state()
        self.backend_state = {}

    def _owning_backend(self) -> tuple[Backend, dict]:
        """The backend holding this instance, and the state to hand it (its own dict + identity)."""
        if self.identity is None:
            raise UnknownBackendError(f"{self._log_name}: the saved state names no backend: {self.backend_state!r}")
        return self.backend(self.identity.backend), {**self.backend_state, **self.identity.to_dict()}

    def _identity_from_plan(self) -> InstanceIdentity | None:
        """For a state cleared by an earlier version (no identity kept): the backend of the plan it
        was started with; None if it was never started with a plan (nothing was created)."""
        plan_id = (self.user_options or {}).get("plan")
        if not plan_id:
            return None
        plan = next((p for p in self.plan_catalogue() if p.id == plan_id), None)
        if plan is None:
            raise UnknownBackendError(
                f"{self._log_name} was started with plan {plan_id!r}, which is no longer configured, and its "
                "saved state (from an earlier version) does not say which backend holds it. Nothing was "
                "deleted: configure that plan again to delete the instance.")
        return InstanceIdentity(backend=plan.backend, owner=self.user.name, server_name=self.name)

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
                except TimeoutError:
                    pass

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> tuple[str, int]:
        """Start on the backend of the requested plan, timed and counted (`metrics`)."""
        plans = self.plan_catalogue()
        wanted = (self.user_options or {}).get("plan") or next((p.id for p in plans if p.default), "")
        plan = next((p for p in plans if p.id == wanted), None)
        with metrics.observe_spawn(plan.backend if plan else metrics.OTHER, plan.id if plan else metrics.OTHER):
            return await self._start()

    async def _start(self) -> tuple[str, int]:
        self._progress_events = []
        self.emit(5, "Checking the request against your proposals and plans")
        entitlements = await self.entitlements()
        plans = self.plan_catalogue()
        seat = await course_seat(self)  # a course instance: the course sets plan, proposal, materials
        try:
            request = seat_request(
                seat, self.user_options, plans=plans, disabled=self.disabled_plans(),
                gpus_free=await self.gpus_free(plans), screens=self.screens, keyboards=self.keyboards,
            ) if seat else validate_request(
                self.user_options, entitlements=entitlements,
                plans=plans, existing={}, screens=self.screens,
                keyboards=self.keyboards, roles_without_proposal=self.roles_without_proposal, new=False,
                disabled=self.disabled_plans(), gpus_free=await self.gpus_free(plans),
            )
        except OptionError as e:
            raise SpawnException(str(e), reason="options") from None
        plan = next(p for p in plans if p.id == request.plan)
        if self.identity is not None and self.identity.backend != plan.backend:
            raise SpawnException(
                f"This instance lives on {self.identity.backend}; the plan {plan.display_name} runs on "
                f"{plan.backend}. Create a new instance for that plan.", reason="options")
        proposal = next((p for p in entitlements.get("proposals", []) if p.get("id") == request.proposal), {})
        instruments = self._record_instruments(proposal)
        backend = self.backend(plan.backend)
        restore_from = await self._restore_source(plan) if self.identity is None else ""  # first start only
        self.identity = InstanceIdentity(backend=plan.backend, owner=self.user.name, server_name=self.name)
        self.port = random_port()
        env = self.get_env()
        env.update({
            "VISA_PROPOSAL": request.proposal, "VISA_PLAN": plan.id, "VISA_SCREEN": request.screen,
            "VISA_KEYBOARD": request.keyboard, "VISA_INSTANCE_NAME": self.display_name or self.name,
            "VISA_INSTRUMENTS": ",".join(instruments),
        })
        spec = InstanceSpec(
            owner=self.user.name, server_name=self.name, instance_id=f"{self.user.name}/{self.name}",
            display_name=self.display_name or self.name, proposal=request.proposal, plan=plan,
            command=tuple(self.cmd + self.get_args()), env=env, port=self.port,
            data_path=f"{self.data_root}/{request.proposal}" if request.proposal else "", screen=request.screen,
            keyboard=request.keyboard, proposal_title=str(proposal.get("title", "")),
            roles=tuple(map(str, entitlements.get("roles", []))),
            instruments=instruments, restore_from=restore_from,
            instrument_control=instruments if request.proposal in entitlements.get("instrument_control", []) else (),
            materials=seat.materials if seat else "", warm_pool=seat.course if seat and seat.warm_pool else "",
        )
        try:
            state = await backend.create(spec, self.emit)
        except BackendError as e:
            self.log.warning("%s: spawn failed (%s): %s %s", self._log_name, e.reason, e.message, e.log_detail)
            raise SpawnException(e.message, reason=e.reason) from None
        self.backend_state = {**state, "plan": plan.id}
        return await backend.address(state)

    def _record_instruments(self, proposal: Mapping[str, Any]) -> tuple[str, ...]:
        """The proposal's instruments (auth_state), saved in the server's user_options at each start
        so the ops console filters by instrument and the gateway of issue 18 can read them."""
        instruments = tuple(dict.fromkeys(str(i) for i in proposal.get("instruments") or () if str(i)))
        options = {**(self.user_options or {}), "instruments": list(instruments)}
        self.user_options = options
        if self.orm_spawner is not None:  # saved now: visa-ops and the gateway read the hub's database
            self.orm_spawner.user_options = options
            # the hub's own session (Spawner.db is deprecated, and logs a warning at each spawn)
            session = object_session(self.orm_spawner) if inspect(self.orm_spawner, raiseerr=False) else None
            if session is not None:
                flag_modified(self.orm_spawner, "user_options")
                session.commit()
        return instruments

    def get_args(self) -> list[str]:
        # the data lives outside home: serve "/" (the sandbox's own small tree) and open in home
        return super().get_args() + ["--ServerApp.root_dir=/"]

    async def poll(self) -> int | None:
        if not self.backend_state:
            return 0
        backend, state = self._owning_backend()
        status = await backend.status(state)
        # UNKNOWN (the cloud did not answer) is not "stopped": the hub would drop a live instance
        if status is InstanceStatus.STOPPED:
            metrics.LOST.labels(self.identity.backend if self.identity else metrics.OTHER).inc()
            return 0
        return None

    async def stop(self, now: bool = False) -> None:
        if self.backend_state:
            backend, state = self._owning_backend()
            await backend.stop(state, now=now)
            backend_label = self.identity.backend if self.identity else metrics.OTHER
            metrics.STOPS.labels(backend_label).inc()
            if self._waiting_for_response:  # the hub's cleanup: the server never answered (http_timeout)
                plan = self.backend_state.get("plan")
                plan_label = plan if any(p.id == plan for p in self.plan_catalogue()) else metrics.OTHER
                metrics.SPAWN_FAILURES.labels(backend_label, plan_label, metrics.UNREACHABLE).inc()

    async def delete_forever(self) -> None:
        """Remove everything the instance owns (home, disk, server): the hub deletes the server."""
        identity = self.identity or self._identity_from_plan()
        if identity is None:
            self.log.info("%s: never started on a backend; nothing to delete", self._log_name)
            return
        backend, state = self.backend(identity.backend), {**self.backend_state, **identity.to_dict()}
        if self.archive_on_delete and self.archive_dir:
            try:
                archive = await archive_instance(
                    backend, state, archive_dir=self.archive_dir, owner=identity.owner,
                    server=identity.server_name, display_name=self.display_name or self.name,
                    options=self.user_options or {}, backend_name=identity.backend)
            except ArchiveNotSupported:
                # the owner or an admin asked for this deletion; lifecycle rules never ask it of
                # these backends (visa_ops skips them), so nothing is deleted by a rule unarchived
                self.log.warning("%s: not archived (the %s backend cannot archive); deleted as asked",
                                 self._log_name, identity.backend)
                archive = None
            except BackendError as e:
                self.log.error("%s: NOT deleted, its data is kept: %s %s", self._log_name, e.message, e.log_detail)
                raise
            self.log.info("%s: archived to %s (%s bytes) before deletion", self._log_name,
                          archive.file if archive else "nothing (no home)", archive.size if archive else 0)
        await backend.delete(state)

    # -- archives ------------------------------------------------------------------------------
    async def archives(self) -> list[Archive]:
        """The owner's archived homes, newest first (the home page lists them)."""
        if not self.archive_dir:
            return []
        return await asyncio.get_running_loop().run_in_executor(None, list_archives, self.archive_dir, self.user.name)

    async def _restore_source(self, plan: Plan) -> str:
        """The archive a new instance's home starts from (`restore` in its options), or ""."""
        restore = str((self.user_options or {}).get("restore") or "")
        if not restore:
            return ""
        archive = await asyncio.get_running_loop().run_in_executor(
            None, find_archive, self.archive_dir, self.user.name, restore) if self.archive_dir else None
        if archive is None:
            raise SpawnException(f"The archived home {restore[:64]} no longer exists.", reason="options")
        if archive.backend != plan.backend:
            raise SpawnException(f"An archive of a {archive.backend} instance cannot be restored on the plan "
                                 f"{plan.display_name}.", reason="options")
        return restore_source(self.archive_dir, archive)  # a path, or the cloud's image
