"""Prometheus metrics of the collaboration service: who is in which instance, and with what role.

Counted at each scrape from the service's own memory (the rooms the instances report, the open
event streams), so a scrape costs no database or hub request. Served at
``/services/visa-collab/metrics`` to admins and to services (a scraper's token: the production
``prometheus`` service, docs/operations.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from tornado import web

from .handlers import ApiHandler

if TYPE_CHECKING:
    from .collab import Collaboration


class SessionsCollector(Collector):
    """Sessions by member role (what the instances report within the presence TTL), rooms with
    anyone in them, and the event streams pages hold open."""

    def __init__(self, collab: Collaboration) -> None:
        self.collab = collab

    def collect(self) -> Iterator[GaugeMetricFamily]:
        by_role: Counter[str] = Counter()
        occupied = 0
        for owner, server in list(self.collab.rooms):
            sessions = self.collab.presence(owner, server)
            occupied += bool(sessions)
            by_role.update(str(s.get("role") or "unknown") for s in sessions)
        sessions_family = GaugeMetricFamily(
            "visa_collab_sessions", "Connections to instances by member role", labels=["role"])
        for role, n in sorted(by_role.items()):
            sessions_family.add_metric([role], n)
        yield sessions_family
        yield GaugeMetricFamily("visa_collab_occupied_instances", "Instances with someone connected", value=occupied)
        yield GaugeMetricFamily("visa_collab_event_streams", "Event streams held open by pages",
                                value=self.collab.events.subscribers())


def registry_for(collab: Collaboration) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SessionsCollector(collab))
    return registry


class MetricsHandler(ApiHandler):
    """Prometheus text for admins and services (never for other people)."""

    @web.authenticated
    async def get(self) -> None:
        user = self.current_user or {}
        if user.get("kind") != "service" and not await self.collab.is_admin(user.get("name", "")):
            raise web.HTTPError(403, "Administrators only.")
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(self.settings["metrics_registry"]))


def metrics_handlers(prefix: str) -> list[tuple]:
    return [(f"{prefix}metrics", MetricsHandler)]
