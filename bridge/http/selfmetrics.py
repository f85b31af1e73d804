"""The bridge's own health metrics (prefix `alertbridge_`), registered beside the telemetry."""

from __future__ import annotations

import logging
import platform
import re
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge import __version__
from bridge.core.logutil import Throttle
from bridge.store import AlertCounts
from bridge.store.interface import Reads, SystemChanges

log = logging.getLogger(__name__)


class TruncationWatch:
    """Counts alerts Alertmanager left out of notifications (`truncatedAlerts`, its webhook
    `max_alerts`) by receiver, and warns at most once per group per interval.

    Receiver names are label values: at most `max_receivers` distinct ones, then "other".
    """

    def __init__(self, counter: Counter, interval: float = 600.0, max_receivers: int = 50):
        self.counter = counter
        self.throttle = Throttle(interval)
        self.max_receivers = max_receivers
        self._receivers: set[str] = set()

    def record(self, receiver: str, group_key: str, sent: int, left_out: int) -> None:
        # Alertmanager regex-quotes the receiver's name (web\\.hook): unquote it.
        name = re.sub(r"\\(.)", r"\1", receiver)[:64] or "-"
        if name not in self._receivers:
            if len(self._receivers) >= self.max_receivers:
                name = "other"
            else:
                self._receivers.add(name)
        self.counter.labels(receiver=name).inc(left_out)
        due, held = self.throttle.take(group_key)
        if due:
            log.warning(
                "receiver %r sent %d alerts of group %s and left out %d (its max_alerts): raise"
                " max_alerts in its webhook_config to store every alert%s",
                name, sent, group_key[:200], left_out,
                f"; {held} more truncated notifications of this group" if held else "",
            )  # fmt: skip


class StoredAlerts(Collector):
    """alertbridge_stored_alerts from the counts read for the scrape that asks (`read`, by
    the /metrics handler): each scrape yields one whole snapshot, so no scrape ever sees the
    series missing or half-updated. Until a first read succeeds it yields no samples; after a
    failed read, the last snapshot.

    >>> c = StoredAlerts()
    >>> c.counts = AlertCounts({("resolved", "info"): 2}, {("firing", "critical", "active"): 1})
    >>> sorted((s.labels["state"], s.value) for m in c.collect() for s in m.samples)
    [('firing', 1), ('resolved', 2)]
    """

    NAME = "alertbridge_stored_alerts"
    HELP = (
        "Stored alerts by state (firing, acknowledged, resolved), severity and, for firing"
        " ones, am_state: suppressed (muted by Alertmanager) or active."
    )

    def __init__(self) -> None:
        self.counts: AlertCounts | None = None

    async def read(self, store: Reads) -> None:
        """Read the counts for this scrape (StoreError: the previous counts stay)."""
        self.counts = await store.counts()

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.NAME, self.HELP, labels=["state", "severity", "am_state"])]

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["state", "severity", "am_state"])
        counts = self.counts  # one snapshot, however many scrapes read it meanwhile
        if counts is not None:
            for (state, severity), count in sorted(counts.by_state.items()):
                if state == "resolved":
                    family.add_metric([state, severity, ""], count)
            for (state, severity, am_state), count in sorted(counts.firing.items()):
                family.add_metric([state, severity, am_state], count)
        yield family


class EscalationSteps(Collector):
    """alertbridge_escalations_total{policy,level}: escalation steps taken (copies posted
    to Alertmanager) since start, read from the engine at scrape time.

    >>> c = EscalationSteps()
    >>> c.source = lambda: {("standard", "1"): 3}
    >>> [(s.labels, s.value) for m in c.collect() for s in m.samples if s.name.endswith("total")]
    [({'policy': 'standard', 'level': '1'}, 3)]
    """

    NAME = "alertbridge_escalations"
    HELP = "Escalation steps taken (a level's copy posted to Alertmanager), by policy and level."

    HELD = "alertbridge_escalations_held"
    HELD_HELP = "Escalation notifications a receiver's rate limit held back (sent a summary)."

    def __init__(self) -> None:
        self.source: Callable[[], Mapping[tuple[str, str], int]] | None = None
        self.held: Callable[[], Mapping[str, int]] | None = None
        #: With the engine in its own process: the counters it keeps in the store.
        self.store: SystemChanges | None = None

    async def read(self) -> None:
        """The worker process's counters, for this scrape (StoreError: the last stay)."""
        if self.store is None:
            return
        counts = await self.store.engine_counts()
        steps: dict[tuple[str, str], int] = {}
        for key, value in counts.get("steps", {}).items():
            policy, _, level = key.rpartition("/")
            steps[(policy, level)] = value
        held = dict(counts.get("held", {}))
        self.source = lambda: steps
        self.held = lambda: held

    def describe(self) -> Iterable[Metric]:
        return [CounterMetricFamily(self.NAME, self.HELP, labels=["policy", "level"]),
                CounterMetricFamily(self.HELD, self.HELD_HELP, labels=["receiver"])]  # fmt: skip

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(self.NAME, self.HELP, labels=["policy", "level"])
        for (policy, level), count in sorted((self.source or dict)().items()):
            family.add_metric([policy, level], count)
        yield family
        held = CounterMetricFamily(self.HELD, self.HELD_HELP, labels=["receiver"])
        for receiver, count in sorted((self.held or dict)().items()):
            held.add_metric([receiver], count)
        yield held


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
        self.alerts_clipped = Counter(
            "alertbridge_alerts_clipped",
            "Received alerts stored cut to the limits (limits.*), by sender.",
            ["sender"],
            registry=registry,
        )
        self.grafana_tests = Counter(
            "alertbridge_grafana_test_notifications",
            "Test notifications of a Grafana contact point, answered and not stored.",
            registry=registry,
        )
        self.attempts_limited = Counter(
            "alertbridge_attempts_limited",
            "Attempts at credentials answered 429 (server.signin_attempts, server.token_failures),"
            " by what: signin, token.",
            ["what"],
            registry=registry,
        )
        self.webhook_busy = Counter(
            "alertbridge_webhook_busy",
            "Webhook requests answered 503 because the bodies in flight held the budget"
            " (server.max_bodies_in_flight_bytes); Alertmanager retries them.",
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
        #: Observed by this server's acknowledgements (API and page): acked_at - starts_at.
        self.time_to_ack = Histogram(
            "alertbridge_time_to_acknowledge_seconds",
            "Time from an alert's start to its acknowledgement through this bridge, by severity.",
            ["severity"],
            buckets=(30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 43200, 86400),
            registry=registry,
        )
        self.stored_alerts = StoredAlerts()
        registry.register(self.stored_alerts)
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
        self.alerts_truncated = Counter(
            "alertbridge_alerts_truncated",
            "Alerts Alertmanager left out of notifications (its max_alerts), by receiver.",
            ["receiver"],
            registry=registry,
        )
        self.truncations = TruncationWatch(self.alerts_truncated)
        self.copies_ignored = Counter(
            "alertbridge_escalation_copies_ignored",
            "The bridge's own alerts the webhook received and did not store: escalation"
            " copies no level receiver took, channel tests or rate-limit summaries a route of"
            " the operator's sent to the bridge (the heartbeat is counted apart).",
            registry=registry,
        )
        self.heartbeats = Counter(
            "alertbridge_heartbeats_received",
            "Heartbeats of the dead man's switch received from Alertmanager.",
            registry=registry,
        )
        self.heartbeat_age = Gauge(
            "alertbridge_heartbeat_age_seconds",
            "Seconds since the last heartbeat of the dead man's switch (NaN: none yet, or"
            " the switch is off).",
            registry=registry,
        )
        self.heartbeat_age.set(float("nan"))
        self.escalations = EscalationSteps()
        registry.register(self.escalations)
        self.adapter_notifications = Counter(
            "alertbridge_adapter_notifications",
            "Notifications the bridge's channel adapters (Microsoft Teams) delivered for"
            " Alertmanager, by adapter, receiver and outcome (delivered, failed: Alertmanager"
            " retries).",
            ["adapter", "receiver", "outcome"],
            registry=registry,
        )
        self.adapter_latency = Histogram(
            "alertbridge_adapter_latency_seconds",
            "Time a channel adapter took to deliver a notification (the channel's answer).",
            ["adapter"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self.reconcile_rounds = Counter(
            "alertbridge_reconcile_rounds",
            "Reconcile rounds with Alertmanager by outcome: trusted (a replica up for longer"
            " than the resend window answered), untrusted (only replicas that restarted since:"
            " nothing inferred), failed (none answered).",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("trusted", "untrusted", "failed"):
            self.reconcile_rounds.labels(outcome=outcome)
        self.background_leader = Gauge(
            "alertbridge_background_leader",
            "1 while this replica holds the lease of the background work done once across"
            " replicas (reconciliation, retention, escalation, the heartbeat check, the"
            " feed's callbacks), else 0.",
            registry=registry,
        )
        self.http_connections = Gauge(
            "alertbridge_http_connections",
            "Open HTTP connections.",
            registry=registry,
        )
        self.event_streams = Gauge(
            "alertbridge_event_streams",
            "Open event streams (GET /api/v1/events/stream), by who serves them: the stream"
            " worker, or the server itself (no worker, or while it restarts).",
            ["served_by"],
            registry=registry,
        )
        self.rules_version = Gauge(
            "alertbridge_rules_version",
            "The version of the rule set in force (0: the configuration's, never changed"
            " over the API).",
            registry=registry,
        )
        self.rules_reloads = Gauge(
            "alertbridge_rules_reloads",
            "Reloads of Prometheus and Alertmanager after changes of the rule set, since start.",
            registry=registry,
        )
        self.rules_resolved_after_change = Gauge(
            "alertbridge_rules_resolved_after_change",
            "Alerts of changed or removed rules resolved in Alertmanager by the bridge, since"
            " start (Prometheus sends no resolution for them).",
            registry=registry,
        )
        self.stream_worker_up = Gauge(
            "alertbridge_stream_worker_up",
            "1 while the stream worker runs and takes streams, else 0 (`serve` only; the"
            " server serves streams itself meanwhile, on a quarter of its connections).",
            registry=registry,
        )
        self.http_connection_events = Counter(
            "alertbridge_http_connection_events",
            "Connections refused at the cap, idle ones closed to make room (evicted), and"
            " connections closed because the request head did not arrive in time.",
            ["event"],
            registry=registry,
        )
        for event in ("refused", "evicted", "header_timeout"):
            self.http_connection_events.labels(event=event)
        self.telemetry_samples = Counter(
            "alertbridge_telemetry_pushed_samples",
            "Telemetry values accepted through POST /api/v1/telemetry, by field.",
            ["field"],
            registry=registry,
        )
