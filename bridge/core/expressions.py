"""What a rule means in PromQL, and the annotations of its alerts: shared by the generated
Prometheus rules, the embedded evaluator and the baseline's backtest."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bridge.core.errors import RuleError
from bridge.core.humanize import HUMANIZERS
from bridge.core.model import AlertRule, Clause
from bridge.core.times import format_duration


def promql_number(value: float) -> str:
    """A float as PromQL literal that parses back to the same double."""
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


#: Where an anomaly rule's subqueries sample its measurement (and the embedded evaluator
#: its history): every minute.
ANOMALY_STEP = 60


def value_expr(rule: AlertRule, namespace: str) -> str:
    """PromQL for the value the rule's metric measures, in base units."""
    if rule.expr is not None:
        return rule.expr
    spec = rule.spec
    if spec is None:  # AlertRule refuses an unknown metric without expr: cannot happen
        raise RuleError(rule.name, "metric", f"unknown metric {rule.metric_name!r} and no expr")
    return spec.measurement(namespace, format_duration(rule.window_seconds))


def measurement_expr(rule: AlertRule, namespace: str) -> str:
    """PromQL for what the rule compares with its threshold: the metric's value, or an
    anomaly rule's score (its distance from the mean of its trailing window in standard
    deviations; its ratio to the same time a week before)."""
    value = value_expr(rule, namespace)
    if rule.anomaly is None:
        return value
    step = format_duration(ANOMALY_STEP)
    if rule.anomaly == "stddev":
        span = f"[{format_duration(rule.anomaly_window)}:{step}]"
        return (f"abs(({value}) - avg_over_time(({value}){span}))"
                f" / stddev_over_time(({value}){span})")  # fmt: skip
    return f"({value}) / last_over_time(({value})[5m:{step}] offset 1w)"


def _comparison(measure: str, custom: bool, condition: str, threshold: float) -> str:
    if custom:
        measure = f"({measure})"
    return f"{measure} {condition} {promql_number(threshold)}"


def clause_expr(clause: Clause, window: int, namespace: str) -> str:
    """One more condition of a rule, as PromQL (its measurement over the rule's window)."""
    if clause.expr is not None:
        measure = clause.expr
    else:
        spec = clause.spec
        if spec is None:  # Clause refuses an unknown metric without expr: cannot happen
            raise RuleError("-", "also", f"unknown metric {clause.metric_name!r}")
        measure = spec.measurement(namespace, format_duration(window))
    return _comparison(measure, clause.expr is not None, clause.condition.value,
                       clause.threshold_base)  # fmt: skip


def alert_expr(rule: AlertRule, namespace: str) -> str:
    """The full alerting expression: measurement, condition, threshold in base units; a rule
    of several conditions joins them per (job, instance) with `and` (all) or `or` (any), the
    first condition's value being the alert's; a week anomaly holds either way (the ratio
    above the threshold or below its inverse)."""
    if rule.anomaly == "week":
        ratio = f"({measurement_expr(rule, namespace)})"
        k = rule.threshold
        return f"{ratio} > {promql_number(k)} or {ratio} < {promql_number(1 / k)}"
    first = _comparison(measurement_expr(rule, namespace), rule.expr is not None or (
        rule.anomaly is not None), rule.condition.value, rule.threshold_base)  # fmt: skip
    if not rule.also:
        return first
    join = " and on (job, instance) " if rule.match == "all" else " or on (job, instance) "
    parts = [first, *(clause_expr(c, rule.window_seconds, namespace) for c in rule.also)]
    return join.join(f"({part})" for part in parts)


def _humanizer(rule: AlertRule) -> str:
    spec = rule.spec
    return spec.humanize if spec and rule.anomaly is None else "humanize"


def _text(text: str) -> str:
    # User text must not be executed as a Go template.
    return text.replace("{{", '{{ "{{" }}')


@dataclass(frozen=True, slots=True)
class Annotations:
    """The rule's annotation templates and their rendering for known labels and value."""

    rule: AlertRule

    def _head(self) -> str:
        return _text(self.rule.description or self.rule.name.replace("_", " "))

    def _tail(self) -> str:
        rule = self.rule
        if rule.anomaly == "stddev":
            return (f" ({rule.severity.value} when more than {rule.threshold:g} from its mean"
                    f" over {format_duration(rule.anomaly_window)})")  # fmt: skip
        if rule.anomaly == "week":
            return (f" ({rule.severity.value} when more than {rule.threshold:g}x or less than"
                    f" 1/{rule.threshold:g} of it)")  # fmt: skip
        fn = HUMANIZERS[_humanizer(rule)]
        tail = f" ({rule.severity.value} when {rule.condition.value} {fn(rule.threshold_base)}"
        for clause in rule.also:
            shown = HUMANIZERS[clause.spec.humanize if clause.spec else "humanize"]
            tail += (f" {'and' if rule.match == 'all' else 'or'} {_text(clause.metric_name)}"
                     f" {clause.condition.value} {shown(clause.threshold_base)}")  # fmt: skip
        if rule.for_seconds:
            tail += f" for {format_duration(rule.for_seconds)}"
        return tail + ")"

    def _what(self) -> str:
        """What the value is, after it (an anomaly rule's score says what it counts)."""
        if self.rule.anomaly == "stddev":
            return " standard deviations from its mean"
        if self.rule.anomaly == "week":
            return " times its value a week before"
        return ""

    def templates(self) -> dict[str, str]:
        rule = self.rule
        return {
            "summary": f"{self._head()} on {{{{ $labels.instance }}}}",
            "description": (
                f"{_text(rule.metric_name)} is {{{{ $value | {_humanizer(rule)} }}}}{self._what()}"
                f" on {{{{ $labels.instance }}}}{self._tail()}"
            ),
            **rule.annotations,
        }

    def render(self, labels: Mapping[str, str], value: float) -> dict[str, str]:
        rule, instance = self.rule, labels.get("instance", "")
        shown = HUMANIZERS[_humanizer(rule)](value)
        head = rule.description or rule.name.replace("_", " ")
        return {
            "summary": f"{head} on {instance}",
            "description": (
                f"{rule.metric_name} is {shown}{self._what()} on {instance}{self._tail()}"
            ),
            **rule.annotations,
        }


def alert_labels(rule: AlertRule) -> dict[str, str]:
    """Labels the rule adds to its alerts."""
    return {"severity": rule.severity.value, "metric": rule.metric_name, **rule.labels}
