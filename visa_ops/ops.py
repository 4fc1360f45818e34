"""The visa-ops service object: instances with their lifecycle, extension requests, banners,
admin actions. Handlers (`visa_ops.handlers`, `visa_ops.console`) and the sweep
(`visa_ops.sweep`) call it; it reads the hub's database (`visa_ops.inventory`), keeps its own
records (`visa_ops.store`), decides with `visa_ops.policy` and acts through the hub's REST API.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from visa_collab.collab_types import CollabError as OpsError
from visa_collab.db import iso
from visa_collab.hubapi import HubAPI, HubError

from . import store as st
from .admins import AdminCache
from .inventory import Instance, load_instances
from .mail import Mailer, MailError, decision_message, warning_message
from .metrics import Metrics
from .policy import LifecyclePolicy, Verdict
from .store import Store

LISTING_MAX_AGE = 10.0  # s: how old a console page's view of the hub's instances may be

log = logging.getLogger("visa_ops")
SWEEP_ACTOR = "visa-ops"
LEVELS = ("info", "warn", "error")
ADMIN_ACTIONS = ("stop", "delete", "extend", "unlimited")

__all__ = ["ADMIN_ACTIONS", "LEVELS", "Operations", "OpsError"]


def extension_model(ext: Mapping[str, Any] | None) -> dict | None:
    if not ext:
        return None
    return {"id": ext["id"], "days": ext["days"], "comment": ext["comment"], "status": ext["status"],
            "decision_comment": ext.get("decision_comment"), "created_at": iso(ext.get("created_at")),
            "owner": ext["owner"], "server": ext["server"], "requester": ext["requester"],
            "decided_by": ext.get("decided_by"), "decided_at": iso(ext.get("decided_at"))}


def notification_model(n: Mapping[str, Any]) -> dict:
    return {"id": n["id"], "level": n["level"], "text": n["text"], "starts_at": iso(n["starts_at"]),
            "ends_at": iso(n.get("ends_at"))}


class OpsHubAPI(HubAPI):
    """visa_collab's hub client, plus the one call only visa-ops makes."""

    #: seconds a deletion may take: for a stopped server JupyterHub answers only once VisaSpawner has
    #: archived it (a VM's disk: about a minute of qemu-img on 2 cores), so the usual timeout would
    #: report a deletion that completes anyway as failed
    remove_timeout = 900.0

    async def remove_server(self, owner: str, server: str) -> dict:
        """Delete a named server for good (its VisaSpawner archives the home first)."""
        return await self._call("DELETE", f"/users/{quote(owner, safe='')}/servers/{quote(server, safe='')}",
                                {"remove": True}, timeout=self.remove_timeout)

    async def remove_archive(self, owner: str, archive: str) -> None:
        """Delete an archive the cloud keeps (its image), through the hub that holds the cloud's credentials."""
        await self._call("DELETE", f"/visa/archives/{quote(owner, safe='')}/{quote(archive, safe='')}")


class Operations:
    def __init__(self, store: Store, policy: LifecyclePolicy, hub: OpsHubAPI, hub_db_url: str, mailer: Mailer, *,
                 plan_backends: Mapping[str, str] | None = None, public_url: str = "",
                 metrics: Metrics | None = None, archiving_backends: Collection[str] | None = None) -> None:
        self.store, self.policy, self.hub, self.mailer = store, policy, hub, mailer
        self.hub_db_url = hub_db_url
        self.plan_backends = dict(plan_backends or {})
        # backends whose instances the hub archives before deleting (None: all of them)
        self.archiving_backends = None if archiving_backends is None else frozenset(archiving_backends)
        self.public_url = public_url.rstrip("/")  # the hub as people reach it, for links in e-mails
        self.metrics = metrics or Metrics()
        self._admins = AdminCache()
        self._emails: dict[str, str] = {}
        self._listing: tuple[float, asyncio.Future[list[Instance]]] | None = None

    def now(self) -> datetime:
        return self.policy.now()

    def archives(self, backend: str) -> bool:
        """Does the hub archive this backend's instances before deleting them? Rules delete only those."""
        return self.archiving_backends is None or backend in self.archiving_backends

    # -- people ------------------------------------------------------------------------------
    async def is_admin(self, name: str) -> bool:
        cached = self._admins.get(name)
        if cached is not None:
            return cached
        model = await self.hub.user(name)
        return self._admins.put(name, bool(model and (model.get("admin") or "role:admin" in model.get("groups", []))))

    async def email_of(self, owner: str) -> str | None:
        """The owner's address from the catalogue (their auth state, read with admin:auth_state)."""
        if owner in self._emails:
            return self._emails[owner]
        model = await self.hub.user(owner) or {}
        auth = model.get("auth_state") or {}
        person = (auth.get("visa") or {}).get("person") or {}
        email = person.get("email") or auth.get("email") or ""
        if email:
            self._emails[owner] = email
        return email or None

    def ask_link(self, inst: Instance) -> str:
        """Where the owner asks for more time: the hub home page, which embeds the banner."""
        return f"{self.public_url}/hub/home#{quote(inst.owner, safe='')}/{quote(inst.server, safe='')}"

    # -- instances ---------------------------------------------------------------------------
    async def instances(self, owner: str | None = None, server: str | None = None) -> list[Instance]:
        return await load_instances(self.hub_db_url, self.plan_backends, owner, server)

    async def listing(self) -> list[Instance]:
        """Every instance, for the console's pages: one read of the hub's database serves every
        page asked within `LISTING_MAX_AGE` s (at 5,000 instances a read costs ~0.1-0.3 s), and
        concurrent asks share it. Decisions (the sweep, actions) always read afresh; an action
        forgets the listing, so the page after it shows its effect."""
        loop = asyncio.get_running_loop()
        cached = self._listing
        if cached is None or loop.time() - cached[0] > LISTING_MAX_AGE:
            cached = (loop.time(), asyncio.ensure_future(self.instances()))
            self._listing = cached
        try:
            return list(await asyncio.shield(cached[1]))
        except Exception:
            if self._listing is cached:
                self._listing = None
            raise

    def forget_listing(self) -> None:
        self._listing = None

    async def instance(self, owner: str, server: str) -> Instance:
        found = await self.instances(owner, server)
        if not found:
            raise OpsError(404, f"No instance {owner}/{server}.")
        return found[0]

    def verdict(self, inst: Instance, record: Mapping[str, Any] | None) -> Verdict:
        return self.policy.decide(inst, record)

    def model(self, inst: Instance, record: Mapping[str, Any] | None, ext: Mapping[str, Any] | None) -> dict:
        """An instance as `GET api/me` and `api/instances/{o}/{s}` show it (the team's contract)."""
        v = self.verdict(inst, record)
        warning = None
        if v.warning:
            kind, deadline = v.warning
            what = "reaches the end of its lifetime" if kind == "lifetime" else "will be deleted for inactivity"
            warning = {"kind": kind, "deadline": iso(deadline),
                       "text": f"This instance {what} on {deadline:%d %B %Y at %H:%M} UTC."}
        return {
            "owner": inst.owner, "server": inst.server, "display_name": inst.display_name,
            "proposal": inst.proposal, "plan": inst.plan, "backend": inst.backend, "state": inst.state,
            "created": iso(inst.created or (record or {}).get("created_at")), "started": iso(inst.started),
            "owner_roles": list(inst.owner_roles), "instruments": list(inst.instruments),
            "expires_at": iso(v.expires_at), "unlimited": v.expires_at is None,
            "inactivity_deadline": iso(v.inactivity_deadline), "last_use": iso(v.last_use),
            "warning": warning, "extension": extension_model(ext),
        }

    async def models(self, instances: list[Instance]) -> list[dict]:
        owners = {i.owner for i in instances}
        owner = next(iter(owners)) if len(owners) == 1 else None  # one person's page: their rows only
        records = await self.store.records(owner)
        latest = await self.store.latest_extensions(owner)
        return [self.model(i, records.get(i.key), latest.get(i.key)) for i in instances]

    async def instance_model(self, actor: str, owner: str, server: str, admin: bool) -> dict:
        if actor != owner and not admin:
            raise OpsError(403, "Only the owner of this instance and administrators can see its lifecycle.")
        inst = await self.instance(owner, server)
        return (await self.models([inst]))[0]

    async def active_notifications(self) -> list[dict]:
        return [notification_model(n) for n in await self.store.list_notifications(self.now())]

    async def me(self, name: str) -> dict:
        return {"notifications": await self.active_notifications(),
                "instances": await self.models(await self.instances(owner=name))}

    # -- extension requests ------------------------------------------------------------------
    async def request_extension(self, actor: str, owner: str, server: str, days: Any, comment: Any) -> dict:
        try:
            days, comment = self.policy.check_extension(days, comment)
        except ValueError as e:
            raise OpsError(400, str(e)) from None
        if actor != owner:
            raise OpsError(403, "Only the owner of this instance can ask for more time.")
        inst = await self.instance(owner, server)
        record = await self.store.upsert(owner, server, created_at=inst.created, spawner_id=inst.spawner_id)
        if record["unlimited"]:
            raise OpsError(400, "This instance has no lifetime limit.")
        if await self.store.list_extensions(st.PENDING, owner, server):
            raise OpsError(409, "A request for this instance is already waiting for a decision.")
        auto = days <= self.policy.auto_extend_days(inst.plan)
        ext = await self.store.add_extension(owner, server, actor, days, comment,
                                             st.AUTO_ACCEPTED if auto else st.PENDING)
        await self.store.add_audit(actor, "request", owner, server, reason="extension",
                                   detail={"id": ext["id"], "days": days, "comment": comment, "status": ext["status"]})
        self.metrics.extensions.labels(ext["status"]).inc()
        if auto:
            await self._apply_extension(inst, ext, SWEEP_ACTOR)
        return extension_model(ext)

    async def decide_extension(self, actor: str, rid: int, decision: Any, comment: Any) -> dict:
        if decision not in ("accept", "refuse"):
            raise OpsError(400, 'decision must be "accept" or "refuse".')
        if not isinstance(comment, str) or len(comment) > 2000:
            raise OpsError(400, "comment must be text of at most 2000 characters.")
        ext = await self.store.extension(rid)
        if ext is None:
            raise OpsError(404, f"No extension request {rid}.")
        status = st.ACCEPTED if decision == "accept" else st.REFUSED
        decided = await self.store.decide_extension(rid, status, actor, comment.strip())
        if decided is None:
            raise OpsError(409, f"Request {rid} was already decided ({ext['status']}).")
        await self.store.add_audit(actor, "decide", ext["owner"], ext["server"], reason="extension",
                                   detail={"id": rid, "status": status, "comment": comment})
        self.metrics.extensions.labels(status).inc()
        try:
            inst = await self.instance(ext["owner"], ext["server"])
        except OpsError:
            return extension_model(decided)  # deleted meanwhile: nothing to extend, nobody to tell
        if status == st.ACCEPTED:
            await self._apply_extension(inst, decided, actor)
        else:
            await self._tell_decision(inst, decided)
        return extension_model(decided)

    async def _apply_extension(self, inst: Instance, ext: Mapping[str, Any], actor: str) -> None:
        await self.store.add_extra_days(inst.owner, inst.server, ext["days"])
        await self.store.add_audit(actor, "extend", inst.owner, inst.server, reason="extension",
                                   detail={"id": ext["id"], "days": ext["days"]})
        self.metrics.actions.labels("extend", "extension", "ok").inc()
        await self._tell_decision(inst, ext)

    async def _tell_decision(self, inst: Instance, ext: Mapping[str, Any]) -> None:
        record = await self.store.record(inst.owner, inst.server)
        deadline = self.verdict(inst, record).expires_at
        subject, body = decision_message(inst, ext["days"], ext["status"], ext.get("decision_comment") or "",
                                         deadline, self.ask_link(inst))
        await self.mail(inst, "decision", subject, body)

    # -- mail ----------------------------------------------------------------------------------
    async def mail(self, inst: Instance, kind: str, subject: str, body: str) -> bool:
        """Send to the owner and log it; False (logged, audited) when it could not be sent."""
        to = ""
        try:
            if not self.mailer.smtp_url:  # say so without asking the hub for an address first
                raise MailError("no SMTP server configured (VISA_OPS_SMTP_URL)")
            to = await self.email_of(inst.owner) or ""
            if not to:
                raise MailError(f"no e-mail address known for {inst.owner}")
            await self.mailer.send(to, subject, body)
        except (MailError, HubError) as e:
            log.warning("%s/%s: %s e-mail not sent: %s", inst.owner, inst.server, kind, e)
            await self.store.log_mail(to or "-", subject, kind, inst.owner, inst.server, "failed", str(e))
            return False
        await self.store.log_mail(to, subject, kind, inst.owner, inst.server, "sent")
        return True

    async def warn(self, inst: Instance, kind: str, deadline: datetime) -> bool:
        """Send the warning for `deadline` once: marked sent only when the mail went out."""
        shown = max(deadline, self.now() + timedelta(hours=self.policy.minimum_notice_hours))
        subject, body = warning_message(inst, kind, shown, self.ask_link(inst))
        sent = await self.mail(inst, f"warning-{kind}", subject, body)
        self.metrics.warnings.labels(kind, "sent" if sent else "failed").inc()
        if sent:
            await self.store.upsert(inst.owner, inst.server, spawner_id=inst.spawner_id,
                                    **{f"warned_{kind}_for": deadline,
                                                                f"warned_{kind}_at": self.now()})
        await self.store.add_audit(SWEEP_ACTOR, "warn", inst.owner, inst.server, reason=kind,
                                   outcome="ok" if sent else "failed", detail={"deadline": iso(deadline)})
        return sent

    # -- actions -------------------------------------------------------------------------------
    async def delete(self, inst: Instance, actor: str, reason: str, why: str = "") -> None:
        """Delete through the hub (its VisaSpawner archives the home first); audited either way."""
        try:
            await self.hub.remove_server(inst.owner, inst.server)
        except HubError as e:
            await self.store.add_audit(actor, "delete", inst.owner, inst.server, reason=reason, outcome="failed",
                                       detail={"error": str(e), "why": why})
            self.metrics.actions.labels("delete", reason, "failed").inc()
            raise
        await self.store.upsert(inst.owner, inst.server, spawner_id=inst.spawner_id, deleted_at=self.now())
        await self.store.add_audit(actor, "delete", inst.owner, inst.server, reason=reason,
                                   detail={"why": why, "proposal": inst.proposal, "plan": inst.plan} if why
                                   else {"proposal": inst.proposal, "plan": inst.plan})
        self.metrics.actions.labels("delete", reason, "ok").inc()

    async def admin_action(self, actor: str, owner: str, server: str, action: str, body: Mapping[str, Any]) -> dict:
        try:
            return await self._admin_action(actor, owner, server, action, body)
        finally:
            self.forget_listing()  # the next console page shows what the action did

    async def _admin_action(self, actor: str, owner: str, server: str, action: str, body: Mapping[str, Any]) -> dict:
        if action not in ADMIN_ACTIONS:
            raise OpsError(404, f"No action {action!r}.")
        comment = body.get("comment", "")
        if not isinstance(comment, str) or len(comment) > 2000:
            raise OpsError(400, "comment must be text of at most 2000 characters.")
        inst = await self.instance(owner, server)
        if action == "delete":
            await self.delete(inst, actor, "admin", comment)
            return {"owner": owner, "server": server, "deleted": True}
        if action == "stop":
            await self.hub.stop_server(owner, server)
            await self.store.add_audit(actor, "stop", owner, server, reason="admin", detail={"why": comment})
            self.metrics.actions.labels("stop", "admin", "ok").inc()
        elif action == "extend":
            days = body.get("days")
            if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3650:
                raise OpsError(400, "days must be a whole number from 1 to 3650.")
            await self.store.upsert(owner, server, created_at=inst.created, spawner_id=inst.spawner_id)
            await self.store.add_extra_days(owner, server, days)
            await self.store.add_audit(actor, "extend", owner, server, reason="admin",
                                       detail={"days": days, "why": comment})
            self.metrics.actions.labels("extend", "admin", "ok").inc()
        else:  # unlimited
            value = body.get("unlimited", True)
            if not isinstance(value, bool):
                raise OpsError(400, "unlimited must be true or false.")
            await self.store.upsert(owner, server, created_at=inst.created, spawner_id=inst.spawner_id,
                                    unlimited=value)
            await self.store.add_audit(actor, "unlimited", owner, server, reason="admin",
                                       detail={"unlimited": value, "why": comment})
            self.metrics.actions.labels("unlimited", "admin", "ok").inc()
        return await self.instance_model(actor, owner, server, admin=True)

    # -- notifications -----------------------------------------------------------------------
    async def add_notification(self, actor: str, body: Mapping[str, Any]) -> dict:
        level, text = body.get("level"), body.get("text")
        if level not in LEVELS:
            raise OpsError(400, 'level must be "info", "warn" or "error".')
        if not isinstance(text, str) or not text.strip() or len(text) > 1000:
            raise OpsError(400, "text must be 1 to 1000 characters.")
        starts = parse_time(body.get("starts_at"), "starts_at") or self.now()
        ends = parse_time(body.get("ends_at"), "ends_at")
        if ends is not None and ends <= starts:
            raise OpsError(400, "ends_at must be after starts_at.")
        n = await self.store.add_notification(level, text.strip(), starts, ends, actor)
        await self.store.add_audit(actor, "notify", reason=level, detail={"id": n["id"], "text": text})
        return notification_model(n)


def parse_time(value: Any, name: str) -> datetime | None:
    """An ISO 8601 time from JSON (naive = UTC) → naive UTC; 400 for anything else."""
    if value in (None, ""):
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise OpsError(400, f"{name} must be an ISO 8601 date and time.")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise OpsError(400, f"{name} must be an ISO 8601 date and time.") from None
    if dt.tzinfo:
        from datetime import UTC

        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt
