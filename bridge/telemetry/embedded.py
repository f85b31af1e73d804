"""The embedded default: with no Alertmanager configured, evaluate the rules in-process on the
exporter's snapshot and store the alerts (source "local") exactly as webhook alerts are stored.

A restart loses the evaluator's memory, not the store's: the firing local alerts of the
previous run are taken up again at start. Once the snapshot has a value for an alert's metric
(or after `restart_grace` seconds), the alert continues as the same episode if its rule still
holds for its labels (event "continued"), and is resolved otherwise (resolution "restart",
event "condition no longer held at restart").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from bridge.core.alerts import ReceivedAlert
from bridge.core.expressions import Annotations
from bridge.core.model import AlertRule
from bridge.core.promql import stddev_score
from bridge.core.times import now_ns
from bridge.ingest.episodes import local_fingerprint
from bridge.store import IngestResult, StoredAlert
from bridge.store.interface import Intake
from bridge.telemetry.evaluator import Alert, Evaluator
from bridge.telemetry.exporter import Telemetry

log = logging.getLogger(__name__)
#: Minutes in a week (a week anomaly compares with the value this long before).
WEEK_MINUTES = 7 * 24 * 60


class EmbeddedEvaluator:
    """Turns evaluator episodes into stored alerts with Prometheus-like labels and annotations."""

    def __init__(
        self,
        rules: list[AlertRule],
        telemetry: Telemetry,
        job: str,
        instance: str,
        restart_grace: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rules = {r.name: r for r in rules}
        self.telemetry = telemetry
        self.labels = {"job": job, "instance": instance}
        self.clock = clock
        self.evaluator = Evaluator(rules, clock=clock)
        self._episodes: dict[int, tuple[str, int]] = {}  # evaluator id -> (fingerprint, ns)
        self._unsent: list[ReceivedAlert] = []  # kept when storage failed, sent next time
        self._previous: list[StoredAlert] | None = None  # last run's firing, until taken up
        self._grace_ends = clock() + restart_grace
        self._forget: list[str] = []  # rules gone, kept until their resolutions are built
        self._held: dict[int, Alert] = {}  # fired outside their rule's window (`when`)
        self._minutes: dict[str, dict[int, float]] = {}  # metric -> minute -> value

    def _received(self, alert: Alert, status: str, ends_at: int | None) -> ReceivedAlert:
        rule = self.rules[alert.rule_name]
        labels = {"alertname": rule.name, **self.labels, "metric": rule.metric_name,
                  **dict(alert.labels)}  # fmt: skip
        if alert.id not in self._episodes:
            self._episodes[alert.id] = (local_fingerprint(labels), int(alert.started_at * 1e9))
        fingerprint, starts_at = self._episodes[alert.id]
        spec = rule.spec if rule.anomaly is None else None  # (an anomaly's value: its score)
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

    async def _take_up(self, store: Intake, metrics: dict[str, float]) -> None:
        """Continue or close the previous run's firing alerts whose metric has a value now
        (all of them once the grace period is over)."""
        if self._previous is None:
            self._previous = await store.firing("local")
        late = self.clock() > self._grace_ends
        now = now_ns()
        waiting = []
        for stored in self._previous:
            rule = self.rules.get(stored.alertname)
            value = metrics.get(rule.input_key) if rule is not None else None
            if rule is not None and value is None and not late:
                waiting.append(stored)
                continue
            alert = self._adopt(stored, rule, value)
            if alert is not None:
                await store.continued(stored.id, now)
            else:
                await store.restart_resolve(stored.id, now)
        self._previous = waiting

    def _adopt(
        self, stored: StoredAlert, rule: AlertRule | None, value: float | None
    ) -> Alert | None:
        """The evaluator's alert continuing `stored`, or None when its condition is gone (or
        its labels are not this evaluator's: another instance, a changed rule)."""
        if rule is None or value is None:
            return None
        expected = self.evaluator.alert_labels(rule.name, self.labels)
        labels = {k: v for k, v in stored.labels.items() if k not in ("alertname", "metric")}
        if expected is None or labels != expected:
            return None
        alert = self.evaluator.restore(rule.name, self.labels, value, stored.starts_at / 1e9)
        if alert is not None:
            self._episodes[alert.id] = (stored.fingerprint, stored.starts_at)
        return alert

    def set_rules(self, rules: list[AlertRule]) -> list[str]:
        """Evaluate `rules` from now on (a rule set changed while running). A rule changed
        keeps its pending and firing alerts (its next evaluation decides, as Prometheus
        carries an alert's state over a reload); a rule gone (deleted, disabled) has its
        firing alerts resolved at the next evaluation. The names of the rules gone."""
        wanted = {r.name: r for r in rules}
        gone = [name for name in self.rules if name not in wanted]
        now = now_ns()
        for name in gone:
            for alert in self.evaluator.active_of(name):
                if self._held.pop(alert.id, None) is not None:
                    continue  # never stored: nothing to resolve
                self._unsent.append(self._received(alert, "resolved", now))
                self._episodes.pop(alert.id, None)
            self.evaluator.remove_rule(name)
        for rule in rules:
            self.evaluator.add_rule(rule)
        self.rules = {**{n: r for n, r in self.rules.items() if n in gone}, **wanted}
        self._forget = gone
        return gone

    def _anomalies(self, metrics: dict[str, float], now: int) -> dict[str, float]:
        """The scores of the anomaly rules (AlertRule.input_key), from each metric's value
        every minute, as Prometheus's subqueries sample it: stddev, the current value's
        distance from the mean of the trailing window's minutes (both ends) in standard
        deviations; week, its ratio to the value a week before (the last within 5 minutes)."""
        out: dict[str, float] = {}
        minute = now // (60 * 1_000_000_000)
        for rule in self.rules.values():
            if rule.anomaly is None:
                continue
            kept = self._minutes.setdefault(rule.metric_name, {})
            value = metrics.get(rule.metric_name)
            if value is None:
                continue
            kept[minute] = value
            for old in [m for m in kept if m < minute - WEEK_MINUTES - 10]:
                del kept[old]
            if rule.anomaly == "stddev":
                span = rule.anomaly_window // 60
                values = [kept[m] for m in range(minute - span, minute + 1) if m in kept]
                if len(values) >= 2:
                    out[rule.input_key] = stddev_score(values)
            else:
                before = next((kept[m] for m in range(minute - WEEK_MINUTES,
                                                      minute - WEEK_MINUTES - 6, -1)
                               if m in kept), None)  # fmt: skip
                if before:
                    out[rule.input_key] = value / before
        return out

    def _windows(self, fired: list[Alert], resolved: list[Alert],
                 now: int) -> tuple[list[Alert], list[Alert]]:  # fmt: skip
        """What is stored of what fired and resolved, as Alertmanager notifies a rule with a
        window (`when`, active_time_intervals): an alert that fires outside it is held until
        it opens (then stored, from when it fired), and one that resolves while held is
        never stored."""
        out = []
        for alert in fired:
            window = self.rules[alert.rule_name].when
            if window is not None and not window.contains(now):
                self._held[alert.id] = alert
            else:
                out.append(alert)
        dropped = set()
        for alert_id, alert in list(self._held.items()):
            window = self.rules[alert.rule_name].when
            if alert.resolved_at is not None:
                dropped.add(alert_id)
                del self._held[alert_id]
            elif window is None or window.contains(now):
                out.append(alert)
                del self._held[alert_id]
        return out, [a for a in resolved if a.id not in dropped]

    async def evaluate_once(self, store: Intake) -> IngestResult:
        """One evaluation: store what fired and what resolved (first taking up the previous
        run's firing alerts)."""
        metrics = self.telemetry.snapshot().as_metrics()
        if self._previous != []:
            await self._take_up(store, metrics)
        now = now_ns()
        metrics = {**metrics, **self._anomalies(metrics, now)}
        step = self.evaluator.step(metrics, self.labels)
        fired, resolved = self._windows(step.fired, step.resolved, now)
        received = [self._received(a, "firing", None) for a in fired]
        received += [self._received(a, "resolved", now) for a in resolved]
        for alert in step.resolved:
            self._episodes.pop(alert.id, None)
        batch, self._unsent = self._unsent + received, []
        for name in self._forget:  # (their resolutions are built: the rules can go)
            self.rules.pop(name, None)
        self._forget = []
        if not batch:
            return IngestResult()
        try:
            return await store.ingest(batch, now, source="local")
        except Exception:
            self._unsent = batch  # the store's HA rules make a later re-send harmless
            raise
