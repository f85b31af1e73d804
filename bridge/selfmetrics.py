"""The bridge's own health metrics (prefix `alertbridge_`), registered beside the telemetry."""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from bridge import __version__


class BridgeMetrics:
    """Webhook, store and API metrics of the bridge itself.

    >>> m = BridgeMetrics(CollectorRegistry())
    >>> m.webhook_requests.labels(code="200").inc()
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.build = Info("alertbridge_build", "alertbridge build information.", registry=registry)
        self.build.info({"version": __version__, "python": platform.python_version()})
        self.webhook_requests = Counter(
            "alertbridge_webhook_requests",
            "Alertmanager webhook requests by HTTP status code.",
            ["code"],
            registry=registry,
        )
        self.alerts_received = Counter(
            "alertbridge_alerts_received",
            "Alerts received in webhook notifications, by status (firing, resolved).",
            ["status"],
            registry=registry,
        )
        # Children resolved once: the webhook's hot path skips the label lookups.
        self.webhook_ok = self.webhook_requests.labels(code="200")
        self.received_firing = self.alerts_received.labels(status="firing")
        self.received_resolved = self.alerts_received.labels(status="resolved")
        self.webhook_duration = Histogram(
            "alertbridge_webhook_duration_seconds",
            "Time to handle a webhook request, storage included.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
            registry=registry,
        )
        self.stored_alerts = Gauge(
            "alertbridge_stored_alerts",
            "Stored alerts by state (firing, acknowledged, resolved) and severity.",
            ["state", "severity"],
            registry=registry,
        )
        self.store_errors = Counter(
            "alertbridge_store_errors",
            "Storage operations that failed, by operation.",
            ["operation"],
            registry=registry,
        )
        self.api_requests = Counter(
            "alertbridge_api_requests",
            "REST API requests by handler and HTTP status code.",
            ["handler", "code"],
            registry=registry,
        )
        self.telemetry_samples = Counter(
            "alertbridge_telemetry_pushed_samples",
            "Telemetry values accepted through POST /api/v1/telemetry, by field.",
            ["field"],
            registry=registry,
        )
