"""Prometheus metrics of the lifecycle (served at ``/services/visa-ops/metrics``).

One registry per service object, so tests can run several services in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.actions = Counter(
            "visa_ops_lifecycle_actions", "Lifecycle actions by action, reason and outcome",
            ["action", "reason", "outcome"], registry=self.registry)
        self.warnings = Counter(
            "visa_ops_warnings_sent", "Warning e-mails by kind and outcome", ["kind", "outcome"],
            registry=self.registry)
        self.extensions = Counter(
            "visa_ops_extension_requests", "Extension requests by outcome", ["outcome"], registry=self.registry)
        self.sweep_seconds = Histogram(
            "visa_ops_sweep_duration_seconds", "Duration of one lifecycle sweep",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60), registry=self.registry)
        self.instances = Gauge(
            "visa_ops_instances", "Instances seen by the last sweep, by state", ["state"], registry=self.registry)
