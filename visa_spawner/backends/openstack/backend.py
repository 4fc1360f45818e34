"""The OpenStack backend: one Nova server per instance, in the facility's cloud.

Why it looks the way it does (see docs/openstack.md):
- every SDK call runs in a small thread pool with retries (`cloud.CloudCalls`; the blocking
  steps themselves are in `cloud.py` too), so a burst of spawns or a slow cloud never blocks the hub;
- servers have deterministic names and a hub tag (`model.py`), so a restarted hub finds
  its servers again with one server-side filtered listing; a server left by a start the hub
  never finished is reused (rebuilt with fresh user-data) rather than duplicated;
- progress is real: Nova's build states, then the stages the instance itself reports through
  the hub's phone-home handler (`phonehome.BOARD`);
- any failure deletes what was created and ends as a `BackendError` a person can read.
"""
from __future__ import annotations

import asyncio
import base64
import secrets
import time
from functools import cached_property
from typing import Any

from traitlets import Bool, Dict, Enum, Float, Integer, List, Unicode

from visa_spawner.backends.base import BackendError, InstanceSpec, InstanceStatus, ProgressCallback, StateError
from visa_spawner.backends.guest import cloudinit
from visa_spawner.backends.guest.materials import DeliversMaterials
from visa_spawner.backends.guest.phonehome import BOARD, Inbox, Report, resume_fingerprint
from visa_spawner.backends.openstack.cloud import (
    CloudCalls,
    CloudSettings,
    absolute_limits,
    attach_floating_ip,
    find_servers,
    get_server,
    list_servers,
    poll_until,
)
from visa_spawner.backends.openstack.deletion import ServerDeletion
from visa_spawner.backends.openstack.errors import fault_error, is_transient, to_backend_error
from visa_spawner.backends.openstack.model import (
    LIST_PAGE,
    POOL_META,
    RESUME_META,
    STAGES,
    build_progress,
    hub_tag,
    owner_of,
    server_address,
    server_metadata,
    server_name,
)
from visa_spawner.backends.openstack.pool import OpenStackPool
from visa_spawner.backends.openstack.security import SecurityGroups
from visa_spawner.backends.openstack.snapshot_archive import SnapshotArchiving
from visa_spawner.backends.openstack.state import OpenStackState
from visa_spawner.backends.openstack.watch import ServerWatch

GONE_STATES = {"DELETED", "SOFT_DELETED", "SHELVED", "SHELVED_OFFLOADED", "SHUTOFF", "ERROR"}
ADOPTABLE = {"ACTIVE", "SHUTOFF", "SHELVED", "SHELVED_OFFLOADED"}


def _config_error(e: ValueError) -> BackendError:
    return BackendError("This instance's settings cannot be turned into a server configuration.",
                        reason="config", log_detail=str(e))


class OpenStackBackend(DeliversMaterials, ServerDeletion, SnapshotArchiving):
    """Instances as Nova servers, configured by cloud-init user-data from `cloudinit`."""

    # -- the cloud ----------------------------------------------------------------------------
    cloud = Unicode("", config=True, help="Cloud name in clouds.yaml (OS_CLOUD if empty).")
    clouds_yaml = Unicode("", config=True,
                          help="Path of clouds.yaml (OS_CLIENT_CONFIG_FILE / standard places if empty).")
    auth = Dict(config=True, help="Explicit auth options, e.g. application credentials "
                "{'auth_url':…, 'application_credential_id':…, 'application_credential_secret':…} "
                "with auth_type set through clouds.yaml; merged over the cloud entry.")
    region = Unicode("", config=True, help="Region name (the cloud entry's if empty).")
    compute_microversion = Unicode("2.90", config=True, help="Nova microversion (>= 2.57: tags, "
                                   "networks='none', user_data on rebuild).")
    endpoint_overrides = Dict(config=True, help="Service type → URL to use instead of the catalogue's "
                              "(identity = auth_url). For internal endpoints, or a test proxy.")
    request_timeout = Float(30, config=True, help="Seconds before one HTTP request to the cloud is abandoned.")
    max_concurrent_calls = Integer(8, config=True, help="Cloud calls in flight at once (threads); "
                                   "more spawns queue, the hub's event loop never waits.")
    call_attempts = Integer(6, config=True, help="Attempts of an idempotent call on 5xx/timeouts/connection errors.")
    retry_backoff = Float(0.5, config=True, help="First retry delay in seconds (doubles, with jitter, cap 30 s).")

    # -- what to create ----------------------------------------------------------------------------
    hub_id = Unicode("visa", config=True, help="Names this hub's servers (tag visa-hub-<id>, names "
                     "visa-<id>-<hash>); unique per hub sharing a project.")
    flavors = Dict(config=True, help="Plan id → flavour name or id. Plans not listed use the smallest "
                   "flavour with at least the plan's CPUs and memory.")
    images = Dict(config=True, help="Plan image → Glance image name or id (default: the plan image itself).")
    networks = Unicode("auto", config=True, help="'auto', 'none' (tests only) or a network name/id.")
    security_group_policies = List(Dict(), config=True, help="Security groups chosen per instance: "
                                   "[{name, description, when: {roles|instruments|flavors: [...]}, rules: "
                                   "[{direction, protocol, port_range_min, port_range_max, remote_ip_prefix}]}]. "
                                   "Ensured (created, missing rules added) through Neutron.")
    instrument_security_groups = Dict(config=True, help="Instrument id → egress rules (to its gateway or network) "
                                      "of its group visa-instrument-<id>, on servers only while its window is open.")
    floating_ip_network = Unicode("", config=True,
                                  help="External network for a floating IP per instance; empty = none.")
    address_source = Enum(["fixed-ip", "floating-ip", "phone-home"], "fixed-ip", config=True,
                          help="Where the hub reaches Jupyter: the fixed IP on `networks`, the floating IP, "
                          "or the address the instance reports when it phones home (tests).")
    mount_templates = List(List(Unicode()), config=True, help="Site mount commands (argv lists with "
                           "{proposal} {mount_point} {data_path} {account}) run in the instance.")
    instance_data_root = Unicode("/data", config=True, help="Where proposals' data are mounted in the instance.")
    instance_path = List(Unicode(), ["/opt/visahub/instance-env/bin"], config=True,
                         help="PATH prefix of the single-user server inside the image.")
    hub_connect_url = Unicode("", config=True, help="Hub API URL instances use to phone home "
                              "(default: JUPYTERHUB_API_URL given to the instance).")

    # -- timing and lifecycle ---------------------------------------------------------------------
    build_timeout = Float(300, config=True, help="Seconds for Nova to make the server ACTIVE.")
    boot_timeout = Float(600, config=True, help="Seconds from ACTIVE to Jupyter up (phone-home). "
                         "Keep build + boot below VisaSpawner.start_timeout.")
    boot_check_interval = Float(15, config=True, help="While waiting for the instance's reports, "
                                "re-check the server this often (seconds) for ERROR or deletion.")
    poll_interval = Float(1.0, config=True, help="Seconds between the listings that follow servers "
                          "being built or deleted (one call per interval for all of them).")
    delete_timeout = Float(300, config=True, help="Seconds to wait for a deleted server to be gone.")
    stop_action = Enum(["delete", "shelve"], "delete", config=True,
                       help="What stop does: delete the server, or shelve it (next start reuses it).")
    adopt_servers = Bool(True, config=True, help="Reuse (rebuild with fresh user-data) a server this "
                         "hub left from an interrupted start instead of deleting and creating one.")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: names being created (the reconciler, which shares this hub-wide backend, must spare them)
        self.inflight: set[str] = set()
        #: names started successfully and not stopped since (late sweeps must spare them)
        self.running: set[str] = set()
        self.cleanups: set[asyncio.Task] = set()  #: late sweeps still to run (`ServerDeletion`)
        settings = CloudSettings(
            cloud=self.cloud, config_file=self.clouds_yaml, auth=dict(self.auth), region=self.region,
            compute_microversion=self.compute_microversion, endpoint_overrides=dict(self.endpoint_overrides),
            request_timeout=self.request_timeout,
        )
        self.cloud_calls = CloudCalls(settings, workers=self.max_concurrent_calls, attempts=self.call_attempts,
                                      backoff=self.retry_backoff, log=self.log)
        self.security = SecurityGroups(self.cloud_calls, self.security_group_policies, log=self.log,
                                       instrument_rules=self.instrument_security_groups)
        self._ids: dict[tuple[str, str], str] = {}
        self._flavors: list | None = None
        self.watch = ServerWatch(self.cloud_calls, hub_tag(self.hub_id), self.poll_interval, self.log)
        self.tag = hub_tag(self.hub_id)

    def name_for(self, owner: str, server: str) -> str:
        return server_name(self.hub_id, owner, server)

    @cached_property
    def warm_pool(self) -> OpenStackPool:
        """The hub's warm pools of servers built ahead for courses (`pool.py`), made on first use."""
        return OpenStackPool(self, parent=self, log=self.log)

    # -- protocol -------------------------------------------------------------------------------------
    async def create(self, spec: InstanceSpec, progress: ProgressCallback) -> dict:
        items = await self.materials.check(spec.materials) if spec.materials else None  # before any server
        if spec.warm_pool and (adopted := await self.warm_pool.adopt(spec, progress)) is not None:
            try:
                await self.materials.push(spec, items, adopted["address"], adopted["port"], progress)
            except BaseException:  # a home without its materials is not the course's: no instance
                self.running.discard(adopted["name"])
                await asyncio.shield(self._delete_named(adopted["name"], wait=True, quiet=True))
                raise
            return adopted
        name = self.name_for(spec.owner, spec.server_name)
        token = spec.env.get("JUPYTERHUB_API_TOKEN", "")
        if not token:
            raise BackendError("The hub gave this instance no API token; it could not report back.", reason="config")
        inbox = BOARD.register(token)
        self.inflight.add(name)
        created, resumed = False, ""
        try:
            progress(8, "Preparing the instance's configuration")
            resume_key = secrets.token_urlsafe(32) if self.stop_action == "shelve" else ""
            config = self.instance_config(spec, resume_key)
            user_data = self.render_user_data(config)
            flavor_id, flavor_name = await self._flavor(spec.plan)
            image_id = await self.boot_image(spec)  # the plan's, or the archive's snapshot when restoring
            groups = await self.security.ensure_for(roles=spec.roles, instruments=spec.instruments,
                                                    flavor=flavor_name, open_instruments=spec.instrument_control)
            progress(10, f"Requesting a server ({flavor_name}) from the facility cloud")
            fields = dict(
                name=name, flavor_id=flavor_id, image_id=image_id, user_data=user_data,
                metadata={**server_metadata(hub_id=self.hub_id, owner=spec.owner, server=spec.server_name,
                                            proposal=spec.proposal, plan=spec.plan.id),
                          **({RESUME_META: resume_fingerprint(resume_key)} if resume_key else {})},
                tags=[self.tag], networks=await self._networks(),
                **({"security_groups": [{"name": g} for g in groups]} if groups else {}),
            )
            created = True  # from here on, a failure must delete whatever exists under `name`
            server, resumed = await self._obtain(spec, fields, config, progress)
            server = await self._wait_active(server, progress)
            floating = await self._floating_ip(server) if self.floating_ip_network else ""
            report = await self._wait_booted(server, inbox, progress)
            address = await self._address(server, report, floating)
            if not resumed:  # a shelved server keeps its home, materials and work
                await self.materials.push(spec, items, address, report.port or spec.port, progress)
            state = OpenStackState(backend=spec.plan.backend, owner=spec.owner, server_name=spec.server_name,
                                   server_id=server.id, name=name, address=address, port=report.port or spec.port,
                                   instrument_address=server_address(server.addresses or {}, network=self.networks
                                                                     if self.networks not in ("auto", "none") else ""))
            self.running.add(name)
            self.log.info("%s/%s: server %s (%s) ready at %s:%s", spec.owner, spec.server_name, name,
                          server.id, address, state.port)
            return state.to_dict()
        except BaseException as e:
            if resumed:  # the server holds the person's files: shelve it again, never delete it
                self.log.warning("%s/%s: start of shelved server %s failed (%s); shelving it again", spec.owner,
                                 spec.server_name, name, getattr(e, "reason", type(e).__name__))
                await asyncio.shield(self._shelve_quietly(name))
            elif created:
                reason = getattr(e, "reason", type(e).__name__)
                self.log.warning("%s/%s: start failed (%s); deleting server %s", spec.owner, spec.server_name,
                                 reason, name)
                await asyncio.shield(self._delete_named(name, wait=True, quiet=True))
                self.sweep_later(name)
            if isinstance(e, BackendError) or not isinstance(e, Exception):
                raise
            raise to_backend_error(e, "starting the instance") from None
        finally:
            BOARD.unregister(inbox)
            if resumed:
                BOARD.withdraw_resume(resumed)
            self.inflight.discard(name)

    async def address(self, state: dict) -> tuple[str, int]:
        saved = OpenStackState.from_dict(state)
        return saved.address, saved.port

    async def status(self, state: dict) -> InstanceStatus:
        server_id = OpenStackState.from_dict(state).server_id
        if not server_id:
            return InstanceStatus.STOPPED
        try:
            server = await self.cloud_calls.call(get_server, server_id, doing="checking the server", attempts=2)
        except BackendError:
            return InstanceStatus.UNKNOWN
        if server is None or server.status in GONE_STATES:
            return InstanceStatus.STOPPED
        return InstanceStatus.RUNNING

    async def stop(self, state: dict, now: bool = False) -> None:
        saved = OpenStackState.from_dict(state)
        name = self._name_of(saved)
        self.running.discard(name)
        if self.stop_action == "shelve" and saved.server_id:
            await self._shelve(saved.server_id)
        else:
            await self._delete_named(name, wait=True)

    async def delete(self, state: dict) -> None:
        name = self._name_of(OpenStackState.from_dict(state))
        self.running.discard(name)
        await self._delete_named(name, wait=True)

    def _name_of(self, state: OpenStackState) -> str:
        """The server's name: saved, or derived from (owner, server) after the hub cleared its state."""
        if state.name:
            return state.name
        if not state.owner:
            raise StateError("OpenStackState: neither a server name nor an owner to find the server by")
        return self.name_for(state.owner, state.server_name)

    async def list_managed(self) -> list[dict]:
        """Every server of this hub: one listing call, filtered by tag on the server side (`pool`:
        the warm pool a server built ahead waits in, "" for an instance's)."""
        servers = await self.cloud_calls.call(
            lambda conn: list_servers(conn, LIST_PAGE, tags=self.tag), doing="listing servers")
        out = []
        for s in servers:
            owner, server = owner_of(s.metadata or {})
            out.append({"backend": "openstack", "server_id": s.id, "name": s.name, "status": s.status,
                        "owner": owner, "server_name": server, "created": s.created_at,
                        "pool": (s.metadata or {}).get(POOL_META, "")})
        return out

    async def capacity(self) -> dict:
        """The project's compute quota (limit and use of instances, cores, RAM) as Nova reports it;
        no `quota` key when the cloud cannot be asked (then `quota_error` says why). No GPU plans
        on OpenStack yet: `gpus_free` 0."""
        try:
            limits = await self.cloud_calls.call(absolute_limits, doing="reading the project's quota",
                                                 attempts=2)
        except BackendError as e:
            self.log.warning("OpenStack quota unknown: %s %s", e.message, e.log_detail)
            return {"gpus_free": 0, "quota_error": e.message}
        return {"quota": limits, "gpus_free": 0}

    async def exists(self, name: str) -> bool:
        """Is a server of this name there (not deleted)? Asked directly: a listing made while
        servers are being built can miss one (Nova pages build requests and instances apart)."""
        found = await self.cloud_calls.call(find_servers, name, self.tag, doing="looking for the server")
        return any(s.status not in ("DELETED", "SOFT_DELETED") for s in found)

    # -- steps --------------------------------------------------------------------------------------
    def user_data(self, spec: InstanceSpec, resume_key: str = "") -> str:
        """cloud-init user-data (base64) from the one shared renderer; the token lives only here."""
        return self.render_user_data(self.instance_config(spec, resume_key))

    def instance_config(self, spec: InstanceSpec, resume_key: str = "") -> dict:
        try:
            return cloudinit.instance_config(
                owner=spec.owner, server_name=spec.server_name, display_name=spec.display_name,
                proposal=spec.proposal, proposal_title=spec.proposal_title, command=spec.command,
                env=spec.env, port=spec.port, screen=spec.screen, keyboard=spec.keyboard,
                mount_templates=self.mount_templates, data_root=self.instance_data_root,
                data_path=spec.data_path, path_prefix=self.instance_path,
                phone_home_url=(self.hub_connect_url.rstrip("/") + "/visa/phone-home") if self.hub_connect_url else "",
                start_timeout=self.boot_timeout, resume_key=resume_key,
            )
        except ValueError as e:
            raise _config_error(e) from None

    @staticmethod
    def render_user_data(config: dict) -> str:
        try:
            text = cloudinit.render_cloud_config(config)
        except ValueError as e:
            raise _config_error(e) from None
        return base64.b64encode(text.encode()).decode()

    async def _lookup(self, kind: str, ref: str) -> str:
        """Image/network name or id → id (cached: these do not change under a running hub)."""
        if (kind, ref) not in self._ids:
            finder = {"image": lambda c: c.image.find_image(ref, ignore_missing=True),
                      "network": lambda c: c.network.find_network(ref, ignore_missing=True)}[kind]
            found = await self.cloud_calls.call(finder, doing=f"looking up the {kind}")
            if found is None:
                raise BackendError(f"The {kind} “{ref}” does not exist in the facility cloud; ask an admin.",
                                   reason="config")
            self._ids[(kind, ref)] = found.id
        return self._ids[(kind, ref)]

    async def _flavor(self, plan) -> tuple[str, str]:
        wanted = self.flavors.get(plan.id)
        if self._flavors is None:  # flavours do not change under a running hub
            self._flavors = await self.cloud_calls.call(lambda c: list(c.compute.flavors()), doing="listing flavours")
        flavors = self._flavors
        if wanted:
            match = [f for f in flavors if wanted in (f.name, f.id)]
        else:
            match = sorted((f for f in flavors if f.vcpus >= plan.cpus and f.ram >= plan.memory_mb),
                           key=lambda f: (f.vcpus, f.ram))
        if not match:
            raise BackendError(f"No flavour of the facility cloud fits plan “{plan.display_name}”; ask an admin.",
                               reason="config", log_detail=f"wanted {wanted or (plan.cpus, plan.memory_mb)}")
        return match[0].id, match[0].name

    async def _networks(self) -> Any:
        if self.networks in ("auto", "none"):
            return self.networks
        return [{"uuid": await self._lookup("network", self.networks)}]

    async def _obtain(self, spec: InstanceSpec, fields: dict, config: dict, progress: ProgressCallback):
        """(server, resume fingerprint or ""): this instance's shelved server started again with its
        disk, or a server a previous start left (safe states only) rebuilt, or a new one. Creation
        is idempotent: after a failed POST, look before posting again."""
        name = fields["name"]
        existing = await self.cloud_calls.call(find_servers, name, self.tag, doing="looking for an existing server")
        for server in existing:
            mine = owner_of(server.metadata or {}) == (spec.owner, spec.server_name)
            resume = (server.metadata or {}).get(RESUME_META, "")
            if mine and resume and self.stop_action == "shelve" and server.status.startswith("SHELVED"):
                progress(12, "Starting your shelved server again (its files are kept)")
                BOARD.offer_resume(resume, {k: v for k, v in config.items() if k != "resume_key"})
                await self.cloud_calls.call(lambda c, server_id: c.compute.unshelve_server(server_id), server.id,
                                            doing="unshelving")
                return server, resume
            if self.adopt_servers and server.status in ADOPTABLE and mine:
                progress(12, "Reusing this instance's server left by an interrupted start")
                return await self._rebuild(server, fields), ""
            await self._delete_named(name, wait=True)
            break
        for attempt in range(1, self.call_attempts + 1):
            try:
                return await self.cloud_calls.once(lambda c: c.compute.create_server(**fields)), ""
            except Exception as e:
                if not is_transient(e) or attempt == self.call_attempts:
                    raise to_backend_error(e, "creating the server") from None
                await asyncio.sleep(self.cloud_calls.delay(attempt))
                found = await self.cloud_calls.call(find_servers, name, self.tag, doing="looking for the new server")
                if found:
                    return found[0], ""
        raise AssertionError("unreachable")

    async def _rebuild(self, server, fields: dict):
        if server.status.startswith("SHELVED"):
            await self.cloud_calls.call(lambda c: c.compute.unshelve_server(server.id), doing="unshelving")
            await poll_until(lambda: self._is(server.id, {"ACTIVE"}), timeout=self.build_timeout)
        await self.cloud_calls.once(lambda c: c.compute.rebuild_server(
            server.id, fields["image_id"], name=fields["name"], metadata=fields["metadata"],
            user_data=fields["user_data"]))
        return server

    async def _is(self, server_id: str, statuses: set[str]) -> bool:
        server = await self.cloud_calls.call(get_server, server_id, doing="checking the server")
        return bool(server and server.status in statuses and not server.task_state)

    async def _wait_active(self, server, progress: ProgressCallback):
        """Follow Nova's real states until ACTIVE; ERROR shows the fault; timeouts fail."""
        deadline = time.monotonic() + self.build_timeout
        shown = None
        while True:
            current = await self.watch.next(server.id)
            if current is None:  # not listed (yet, or any more): ask for this one server
                current = await self.cloud_calls.call(get_server, server.id, doing="following the server's build")
            if current is None:
                raise BackendError("The server disappeared while the cloud was building it.", reason="vanished")
            if current.status == "ERROR":
                raise fault_error(current.fault, current.status)
            if current.status == "ACTIVE" and not current.task_state:
                progress(50, "The server is ACTIVE; waiting for the instance to boot")
                return current
            step = (current.status, current.task_state)
            if step != shown:
                shown = step
                percent, text = build_progress(current.task_state)
                progress(percent, f"{text} ({current.status.lower()})")
            if time.monotonic() > deadline:
                raise BackendError(f"The cloud did not build the server within {self.build_timeout:g} s.",
                                   reason="build-timeout")

    async def _wait_booted(self, server, inbox: Inbox, progress: ProgressCallback) -> Report:
        """The instance's own reports (phone-home) until Jupyter is up; the server is re-checked
        now and then so an ERROR or a deletion during boot ends the wait at once."""
        deadline = time.monotonic() + self.boot_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BackendError(f"The instance did not finish booting within {self.boot_timeout:g} s; "
                                   "its server was deleted.", reason="boot-timeout")
            try:
                report = await asyncio.wait_for(inbox.queue.get(), min(remaining, self.boot_check_interval))
            except TimeoutError:
                current = await self.watch.next(server.id)
                if current is None:
                    raise BackendError("The server was deleted while the instance booted.", reason="vanished") from None
                if current.status == "ERROR":
                    raise fault_error(current.fault, current.status) from None
                continue
            if report.stage == "failed":
                raise BackendError(f"The instance could not start: {report.message or 'no reason given'}",
                                   reason="instance-failed")
            percent, text = STAGES[report.stage]
            progress(percent, text)
            if report.stage == "jupyter-up":
                return report

    async def _address(self, server, report: Report, floating: str) -> str:
        if self.address_source == "phone-home":
            address = report.address
        elif self.address_source == "floating-ip":
            address = floating
        else:
            current = await self.cloud_calls.call(get_server, server.id, doing="reading the server's address")
            net = "" if self.networks in ("auto", "none") else self.networks
            address = server_address((current.addresses if current else {}) or {}, network=net)
        if not address:
            raise BackendError("The instance has no address the hub can reach.", reason="no-address",
                               log_detail=f"address_source={self.address_source}")
        return address

    async def _floating_ip(self, server) -> str:
        net_id = await self._lookup("network", self.floating_ip_network)
        return await self.cloud_calls.call(attach_floating_ip, server, net_id, doing="attaching a floating IP",
                                           attempts=1)

    async def _shelve_quietly(self, name: str) -> None:
        try:
            for server in await self.cloud_calls.call(find_servers, name, self.tag, doing="looking for the server"):
                if server.status != "ERROR" and not server.status.startswith("SHELVED"):
                    await self._shelve(server.id)
        except Exception as e:  # noqa: BLE001 - the reconciler and the next start see it as it is
            self.log.warning("Shelving %s again failed: %s", name, e)

    async def _shelve(self, server_id: str) -> None:
        await self.cloud_calls.call(lambda c: c.compute.shelve_server(server_id), doing="shelving the server")
        await poll_until(lambda: self._is(server_id, {"SHELVED", "SHELVED_OFFLOADED"}), timeout=self.delete_timeout)
