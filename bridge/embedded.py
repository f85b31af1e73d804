"""The embedded default: with no Alertmanager configured, evaluate the rules in-process on the
exporter's snapshot and store the alerts (source "local") exactly as webhook alerts are stored."""

from __future__ import annotations

import logging
import time

from bridge.episodes import IngestResult, ingest, local_fingerprint
from bridge.evaluator import Alert, Evaluator
from bridge.generate.prometheus import Annotations
from bridge.model import AlertRule
from bridge.store import now_ns
from bridge.telemetry import Telemetry
from bridge.webhook import ReceivedAlert
from bridge.writer import Writer

log = logging.getLogger(__name__)


class EmbeddedEvaluator:
    """Turns evaluator episodes into stored alerts with Prometheus-like labels and annotations."""

    def __init__(
        self, rules: list[AlertRule], telemetry: Telemetry, job: str, instance: str
    ) -> None:
        self.rules = {r.name: r for r in rules}
        self.telemetry = telemetry
        self.labels = {"job": job, "instance": instance}
        self.evaluator = Evaluator(rules, clock=time.time)
        self._episodes: dict[int, tuple[str, int]] = {}  # evaluator id -> (fingerprint, ns)
        self._unsent: list[ReceivedAlert] = []  # kept when storage failed, sent next time

    def _received(self, alert: Alert, status: str, ends_at: int | None) -> ReceivedAlert:
        rule = self.rules[alert.rule_name]
        labels = {"alertname": rule.name, **self.labels, "metric": rule.metric_name,
                  **dict(alert.labels)}  # fmt: skip
        if alert.id not in self._episodes:
            self._episodes[alert.id] = (local_fingerprint(labels), int(alert.started_at * 1e9))
        fingerprint, starts_at = self._episodes[alert.id]
        spec = rule.spec
        value = spec.to_base(alert.value) if spec else alert.value
        return ReceivedAlert(
            fingerprint=fingerprint,
            status=status,
            starts_at=starts_at,
            ends_at=ends_at,
            labels=dict(sorted(labels.items())),
            annotations=Annotations(rule).render(labels, value),
            generator_url="",
        )

    async def evaluate_once(self, writer: Writer) -> IngestResult:
        """One evaluation: store what fired and what resolved."""
        step = self.evaluator.step(self.telemetry.snapshot().as_metrics(), self.labels)
        received = [self._received(a, "firing", None) for a in step.fired]
        now = now_ns()
        received += [self._received(a, "resolved", now) for a in step.resolved]
        for alert in step.resolved:
            self._episodes.pop(alert.id, None)
        batch, self._unsent = self._unsent + received, []
        if not batch:
            return IngestResult()
        try:
            return await writer.submit(ingest(batch, now, source="local"))
        except Exception:
            self._unsent = batch  # the store's HA rules make a later re-send harmless
            raise
