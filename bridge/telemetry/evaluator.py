"""In-process rule evaluation: the embedded default when no Prometheus runs, and a library API.

Semantics follow Prometheus and Alertmanager so the verdicts match the generated rules:
- a rule's condition is compared in base units (`AlertRule.holds`), exactly as the PromQL is;
- an episode starts once the condition has held for the rule's `for` (pending before that) and
  ends the first evaluation it no longer holds;
- notifications (the return value of `evaluate` and the callbacks) go out when an episode starts
  and then at most once per `cooldown_seconds` per (rule, labels) while it fires unacknowledged,
  like Alertmanager's repeat_interval; a new episode within the cooldown of the last
  notification for the same key is recorded but not notified again (flap damping).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from bridge.core.model import AlertRule, Severity

log = logging.getLogger(__name__)

Key = tuple[str, frozenset[tuple[str, str]]]
Callback = Callable[["Alert"], None]


@dataclass(slots=True)
class Alert:
    """One firing episode of a rule for a label set.

    >>> a = Alert(1, "high_cpu", "system.cpu.percent", 91.0, 80.0, Severity.WARNING, ">", 0.0)
    >>> a.active
    True
    """

    id: int
    rule_name: str
    metric_name: str
    value: float
    threshold: float
    severity: Severity
    condition: str
    started_at: float
    labels: Mapping[str, str] = field(default_factory=dict)
    message: str = ""
    acknowledged: bool = False
    resolved_at: float | None = None
    notified_at: float | None = None
    notify_count: int = 0

    @property
    def active(self) -> bool:
        """Firing and not resolved."""
        return self.resolved_at is None


@dataclass(frozen=True, slots=True)
class EvaluationResult:
    """What one evaluation changed."""

    fired: list[Alert]  # episodes that started
    resolved: list[Alert]  # episodes that ended
    notified: list[Alert]  # alerts notified (new ones and cooldown repeats)


class Evaluator:
    """Evaluates rules on metric values in seed units.

    >>> from bridge.core.rules import DEFAULT_RULES
    >>> ev = Evaluator([r.replace(for_seconds=0) for r in DEFAULT_RULES], clock=lambda: 0.0)
    >>> [a.rule_name for a in ev.evaluate({"system.cpu.percent": 97.0})]
    ['high_cpu', 'critical_cpu']
    """

    def __init__(
        self,
        rules: Iterable[AlertRule] = (),
        *,
        notification_severity_threshold: Severity = Severity.WARNING,
        max_active_alerts: int = 10_000,
        enabled: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._rules: dict[str, AlertRule] = {}
        for rule in rules:
            self.add_rule(rule)
        self.notification_severity_threshold = Severity(notification_severity_threshold)
        self.max_active_alerts = max_active_alerts
        self.enabled = enabled
        self._clock = clock
        self._ids = itertools.count(1)
        self._pending: dict[Key, float] = {}  # key -> first time the condition held
        self._active: dict[Key, Alert] = {}
        self._last_notified: dict[Key, float] = {}
        self._by_id: dict[int, Alert] = {}
        self._callbacks: list[Callback] = []
        self.callback_errors = 0
        self.evicted = 0

    # --- rules ---------------------------------------------------------------------------
    def add_rule(self, rule: AlertRule) -> None:
        """Add or replace a rule by name."""
        self._rules[rule.name] = rule

    def remove_rule(self, name: str) -> bool:
        """Remove a rule and forget its pending and active state; False if unknown."""
        if self._rules.pop(name, None) is None:
            return False
        for table in (self._pending, self._active, self._last_notified):
            for key in [k for k in table if k[0] == name]:
                del table[key]
        return True

    def active_of(self, name: str) -> list[Alert]:
        """The firing alerts of rule `name`."""
        return [alert for key, alert in self._active.items() if key[0] == name]

    @property
    def rules(self) -> list[AlertRule]:
        return list(self._rules.values())

    # --- notification ----------------------------------------------------------------------
    def set_notification_callback(self, callback: Callback) -> None:
        """Replace all callbacks with this one (the seed's API)."""
        self._callbacks = [callback]

    def add_notification_callback(self, callback: Callback) -> None:
        """Add a callback; each runs even when another raises."""
        self._callbacks.append(callback)

    def _notify(self, alert: Alert) -> None:
        if alert.severity.rank < self.notification_severity_threshold.rank:
            return
        for callback in self._callbacks:
            try:
                callback(alert)
            except Exception:
                self.callback_errors += 1
                log.exception("notification callback %r failed for alert %s", callback, alert.id)

    # --- evaluation --------------------------------------------------------------------------
    def evaluate(
        self, metrics: Mapping[str, float], labels: Mapping[str, str] | None = None
    ) -> list[Alert]:
        """Evaluate every enabled rule; returns the alerts notified by this call."""
        return self.step(metrics, labels).notified

    def step(
        self, metrics: Mapping[str, float], labels: Mapping[str, str] | None = None
    ) -> EvaluationResult:
        """Evaluate every enabled rule on `metrics` (seed metric name -> value in seed units).

        `labels` (for example instance) identify the source; cooldowns are per (rule, labels).
        A rule whose metric is absent from `metrics` does not hold: like a PromQL comparison on
        a missing series, it yields nothing, so a firing alert resolves.
        """
        result = EvaluationResult([], [], [])
        if not self.enabled:
            return result
        now = self._clock()
        base = dict(labels or {})
        for rule in self._rules.values():
            if not rule.enabled:
                continue
            alert_labels = {**base, **rule.labels, "severity": rule.severity.value}
            key: Key = (rule.name, frozenset(alert_labels.items()))
            value = rule.holds_in(metrics)  # (several conditions: all of them, or any)
            if value is None:
                self._pending.pop(key, None)
                alert = self._active.pop(key, None)
                if alert is not None:
                    alert.resolved_at = now
                    self._by_id.pop(alert.id, None)  # only firing alerts can be acknowledged
                    result.resolved.append(alert)
                continue
            since = self._pending.setdefault(key, now)
            alert = self._active.get(key)
            if alert is None:
                if now - since < rule.for_seconds:
                    continue  # pending
                alert = self._fire(rule, key, alert_labels, value, now)
                result.fired.append(alert)
            else:
                alert.value = value
            last = self._last_notified.get(key)
            if not alert.acknowledged and (last is None or now - last >= rule.cooldown_seconds):
                self._last_notified[key] = now
                alert.notified_at = now
                alert.notify_count += 1
                result.notified.append(alert)
                self._notify(alert)
        return result

    def _fire(
        self, rule: AlertRule, key: Key, labels: dict[str, str], value: float, now: float
    ) -> Alert:
        if len(self._active) >= self.max_active_alerts:
            oldest_key = min(self._active, key=lambda k: self._active[k].started_at)
            evicted = self._active.pop(oldest_key)
            self._by_id.pop(evicted.id, None)
            self.evicted += 1
            log.warning(
                "max_active_alerts=%d reached: dropped alert %s", self.max_active_alerts, evicted.id
            )
        alert = Alert(
            id=next(self._ids),
            rule_name=rule.name,
            metric_name=rule.metric_name,
            value=value,
            threshold=rule.threshold,
            severity=rule.severity,
            condition=rule.condition.value,
            started_at=now,
            labels=MappingProxyType(dict(labels)),
            message=f"{rule.metric_name} {value:g} {rule.condition.value} {rule.threshold:g}"
            f"{rule.unit and ' ' + rule.unit}",
        )
        self._active[key] = alert
        self._by_id[alert.id] = alert
        return alert

    def restore(
        self,
        rule_name: str,
        labels: Mapping[str, str],
        value: float,
        started_at: float,
    ) -> Alert | None:
        """Take up an episode that was firing before a restart, as if it had fired at
        `started_at` (its `for` long past): the next evaluations continue or end it, with no
        new "fired". None when the condition does not hold on `value`, or no rule has the name.
        `labels` are the source's (as given to step)."""
        rule = self._rules.get(rule_name)
        if rule is None or not rule.enabled or not rule.holds(value):
            return None
        alert_labels = {**labels, **rule.labels, "severity": rule.severity.value}
        key: Key = (rule.name, frozenset(alert_labels.items()))
        if key in self._active:
            return self._active[key]
        self._pending[key] = started_at
        alert = self._fire(rule, key, alert_labels, value, started_at)
        self._last_notified[key] = self._clock()  # notified before the restart
        return alert

    def alert_labels(self, rule_name: str, labels: Mapping[str, str]) -> dict[str, str] | None:
        """The labels an alert of the rule carries for a source's `labels` (None: no rule)."""
        rule = self._rules.get(rule_name)
        if rule is None:
            return None
        return {**labels, **rule.labels, "severity": rule.severity.value}

    # --- operator actions ----------------------------------------------------------------------
    def acknowledge(self, alert_id: int) -> bool:
        """Acknowledge: the alert stops repeating and leaves get_active_alerts. False if unknown."""
        alert = self._by_id.get(alert_id)
        if alert is None:
            return False
        alert.acknowledged = True
        return True

    def get_active_alerts(self) -> list[Alert]:
        """Firing, unacknowledged alerts, oldest first."""
        return [a for a in self._active.values() if not a.acknowledged]

    def get_alert(self, alert_id: int) -> Alert | None:
        """Any alert this evaluator still remembers, by id."""
        return self._by_id.get(alert_id)
