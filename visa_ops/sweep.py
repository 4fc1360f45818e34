"""One lifecycle sweep: load every instance, decide, warn, delete, prune archives, audit.

`sweep_once` is the unit the service repeats every `interval` seconds and the scale bench
calls once over 5,000 instances. Decisions are pure and fast (`visa_ops.policy`); the slow parts
(e-mail, hub calls) only happen for the few instances with something due. One bad record is
logged and counted, never the end of the sweep.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .inventory import Instance
from .ops import SWEEP_ACTOR, HubError, Operations

log = logging.getLogger("visa_ops.sweep")
DELETE_PENDING = timedelta(hours=1)


@dataclass
class SweepReport:
    """What one sweep saw and did (also what the bench prints)."""

    instances: int = 0
    warned: list[tuple[str, str, str]] = field(default_factory=list)  # (owner, server, kind)
    deleted: list[tuple[str, str, str]] = field(default_factory=list)  # (owner, server, reason)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (owner, server, error)
    kept: list[tuple[str, str, str]] = field(default_factory=list)  # due, but its backend cannot archive
    pruned: list[str] = field(default_factory=list)  # archive paths
    load_seconds: float = 0.0
    decide_seconds: float = 0.0  # the pure decision work over every instance
    total_seconds: float = 0.0


async def sweep_once(ops: Operations, archive_dir: str | os.PathLike | None = None,
                     retention_days: float = 30.0, instances: list[Instance] | None = None) -> SweepReport:
    """Run the rules once over every instance (or the `instances` given, for the bench)."""
    report = SweepReport()
    started = time.perf_counter()
    full = instances is None  # every server the hub has: records of the others can go
    if instances is None:
        instances = await ops.instances()
    records = await ops.store.ensure_records([(i.owner, i.server, i.created, i.spawner_id) for i in instances],
                                             prune=full)
    report.load_seconds = time.perf_counter() - started
    report.instances = len(instances)

    t0 = time.perf_counter()
    at = ops.now()
    due = []
    for inst in instances:
        try:
            verdict = ops.policy.decide(inst, records.get(inst.key), at)
        except Exception as e:  # a record the rules cannot read: say which, carry on
            log.exception("%s/%s: cannot decide", inst.owner, inst.server)
            report.failed.append((inst.owner, inst.server, f"decide: {type(e).__name__}"))
            continue
        asked = records.get(inst.key, {}).get("deleted_at")
        if verdict.delete and asked and at - asked < DELETE_PENDING:
            continue  # the hub is still stopping and archiving it: do not ask twice
        if verdict.delete and not ops.archives(inst.backend):
            # JupyterHub would forget the record even though nothing was archived: an admin decides
            report.kept.append((inst.owner, inst.server, verdict.delete))
            continue
        if verdict.delete or verdict.warn_now:
            due.append((inst, verdict))
    report.decide_seconds = time.perf_counter() - t0

    for state in ("running", "pending", "stopped"):
        ops.metrics.instances.labels(state).set(sum(1 for i in instances if i.state == state))
    for inst, verdict in due:
        try:
            if verdict.delete:
                await ops.delete(inst, SWEEP_ACTOR, verdict.delete)
                report.deleted.append((inst.owner, inst.server, verdict.delete))
                log.info("%s/%s: deleted (%s)", inst.owner, inst.server, verdict.delete)
            elif verdict.warn_now:
                kind, deadline = verdict.warn_now
                if await ops.warn(inst, kind, deadline):
                    report.warned.append((inst.owner, inst.server, kind))
        except Exception as e:
            log.warning("%s/%s: lifecycle action failed: %s", inst.owner, inst.server, e)
            report.failed.append((inst.owner, inst.server, str(e)[:200]))

    if archive_dir:
        report.pruned = await prune_archives(ops, Path(archive_dir), retention_days)
    report.total_seconds = time.perf_counter() - started
    ops.metrics.sweep_seconds.observe(report.total_seconds)
    return report


def expired_archives(archive_dir: Path, retention_days: float, at: datetime) -> list[Path]:
    """Archives whose sidecar says they were created more than `retention_days` before `at`.
    An unreadable sidecar keeps its archive (never delete what cannot be dated)."""
    limit = at - timedelta(days=retention_days)
    out: list[Path] = []
    if not archive_dir.is_dir():
        return out
    for sidecar in sorted(archive_dir.glob("*/*.json")):
        try:
            meta = json.loads(sidecar.read_text())
            created = datetime.fromisoformat(str(meta["created"]).replace("Z", "+00:00"))
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("Archive sidecar %s is unreadable; its archive is kept", sidecar)
            continue
        if created.tzinfo:
            created = created.astimezone(UTC).replace(tzinfo=None)
        if created < limit:
            out.append(sidecar)
    return out


def _remove_archive(sidecar: Path) -> list[str]:
    """The archive(s) named like the sidecar (`<stem>.<ext>`), then the sidecar itself."""
    removed = []
    stem = sidecar.name[: -len(".json")]
    for path in sidecar.parent.iterdir():
        if path != sidecar and path.name.startswith(stem + ".") and not path.name.endswith(".partial"):
            path.unlink(missing_ok=True)
            removed.append(str(path))
    sidecar.unlink(missing_ok=True)
    return removed


async def prune_archives(ops: Operations, archive_dir: Path, retention_days: float) -> list[str]:
    """Delete archives past retention (file work in an executor); each removal audited."""
    loop = asyncio.get_running_loop()
    pruned: list[str] = []
    for sidecar in await loop.run_in_executor(None, expired_archives, archive_dir, retention_days, ops.now()):
        try:
            meta = json.loads(sidecar.read_text())
            if meta.get("image_id"):  # kept by the cloud: the hub, which holds its credentials, deletes it
                await ops.hub.remove_archive(str(meta["owner"]), str(meta["id"]))
                removed = [str(meta.get("image_name") or meta["image_id"])]
            else:
                removed = await loop.run_in_executor(None, _remove_archive, sidecar)
        except (OSError, ValueError, KeyError, HubError) as e:
            log.warning("Archive %s not pruned: %s", sidecar, e)
            continue
        await ops.store.add_audit(SWEEP_ACTOR, "prune", str(meta.get("owner") or sidecar.parent.name),
                                  str(meta.get("server") or ""), reason="retention",
                                  detail={"files": [os.path.basename(p) for p in removed],
                                          "created": meta.get("created")})
        ops.metrics.actions.labels("prune", "retention", "ok").inc()
        pruned.extend(removed)
    return pruned


async def keep_sweeping(ops: Operations, interval: float, archive_dir: str | None, retention_days: float) -> None:
    """Every `interval` s, one sweep; errors are logged and the next sweep comes anyway."""
    while True:
        try:
            report = await sweep_once(ops, archive_dir, retention_days)
            if report.warned or report.deleted or report.kept or report.failed or report.pruned:
                log.info("Sweep: %d instances, %d warned, %d deleted, %d kept (backend cannot archive), %d failed, "
                         "%d archive files pruned (%.2fs)",
                         report.instances, len(report.warned), len(report.deleted), len(report.kept),
                         len(report.failed), len(report.pruned), report.total_seconds)
        except Exception:
            log.exception("Sweep failed; trying again in %ss", interval)
        await asyncio.sleep(interval)
