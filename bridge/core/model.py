"""Value objects: severities, conditions, durations and the AlertRule, validated on construction."""

from __future__ import annotations

import enum
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from bridge.core.catalog import MetricSpec, spec_for
from bridge.core.errors import ConfigError, RuleError
from bridge.core.times import parse_duration
from bridge.core.windows import Window, parse_window

LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
RULE_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Labels the rule itself sets on every alert; a rule's `labels` may not override them.
RESERVED_LABELS = frozenset({"alertname", "severity", "metric"})


def dumps_map(mapping: Mapping[str, str]) -> str:
    """Labels or annotations as compact JSON text with sorted keys (stable for comparisons)."""
    return orjson.dumps(dict(mapping), option=orjson.OPT_SORT_KEYS).decode()


def json_integer(value: object) -> int | None:
    """A JSON integer as JSON Schema counts them (1 and 1.0 alike), None for anything else
    (booleans, fractions, strings).

    >>> json_integer(3), json_integer(3.0), json_integer(3.5), json_integer(True)
    (3, 3, None, None)
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def dumps_list(items: Sequence[str]) -> str:
    """A list of strings as compact JSON text ("[]" for none, the common case, built once)."""
    return orjson.dumps(list(items)).decode() if items else "[]"


def dumps_extra(extra: Mapping[str, Any] | None) -> str:
    """An object as compact JSON text with sorted keys ("{}" for none)."""
    return orjson.dumps(extra, option=orjson.OPT_SORT_KEYS).decode() if extra else "{}"


class Severity(enum.StrEnum):
    """Alert severity, ordered: info < warning < error < critical."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Position in the order, 0 for info."""
        return list(Severity).index(self)


class Condition(enum.StrEnum):
    """Comparison of the measured value against the threshold, as in PromQL."""

    GT = ">"
    LT = "<"
    GE = ">="
    LE = "<="
    EQ = "=="
    NE = "!="

    def holds(self, value: float, threshold: float) -> bool:
        """Whether `value <cond> threshold`; NaN never holds except for !=, as in PromQL."""
        return _OPS[self](value, threshold)


_OPS: dict[Condition, Callable[[float, float], bool]] = {
    Condition.GT: operator.gt,
    Condition.LT: operator.lt,
    Condition.GE: operator.ge,
    Condition.LE: operator.le,
    Condition.EQ: operator.eq,
    Condition.NE: operator.ne,
}


def _frozen_annotations(rule: str, annotations: object) -> Mapping[str, str]:
    if not isinstance(annotations, Mapping):
        raise RuleError(rule, "annotations", "must be a mapping of name to text")
    clean: dict[str, str] = {}
    for key, val in annotations.items():
        if not isinstance(key, str) or not LABEL_NAME_RE.match(key):
            raise RuleError(rule, "annotations", f"{key!r} is not a valid annotation name")
        if key in ("summary", "description", "alertbridge_id", "escalation"):
            raise RuleError(rule, "annotations", f"{key!r} is written by alertbridge itself")
        if not isinstance(val, str):
            raise RuleError(rule, "annotations", f"value of {key!r} must be a string")
        clean[key] = val
    return MappingProxyType(dict(sorted(clean.items())))


def _frozen_labels(rule: str, labels: object) -> Mapping[str, str]:
    if not isinstance(labels, Mapping):
        raise RuleError(rule, "labels", "must be a mapping of label name to value")
    clean: dict[str, str] = {}
    for key, val in labels.items():
        if not isinstance(key, str) or not LABEL_NAME_RE.match(key) or key.startswith("__"):
            raise RuleError(rule, "labels", f"{key!r} is not a valid Prometheus label name")
        if key in RESERVED_LABELS:
            raise RuleError(rule, "labels", f"{key!r} is set by the rule itself")
        if not isinstance(val, str):
            raise RuleError(rule, "labels", f"value of {key!r} must be a string")
        clean[key] = val
    return MappingProxyType(dict(sorted(clean.items())))


@dataclass(frozen=True, slots=True)
class Clause:
    """One more condition of a rule of several (`also:`): a metric of the catalogue (or a
    PromQL `expr`, its value in its own unit), a comparison and a threshold in the metric's
    seed units.

    >>> Clause("errors.rate", ">", 0.05).holds(0.07)
    True
    """

    metric_name: str
    condition: Condition
    threshold: float
    expr: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "condition", Condition(self.condition))
        object.__setattr__(self, "threshold", float(self.threshold))

    @classmethod
    def parse(cls, rule: str, index: int, raw: object) -> Clause:
        """A clause of a `rules:` entry's `also:`; RuleError naming it."""
        where = f"also[{index}]"
        if not isinstance(raw, Mapping):
            raise RuleError(rule, where, "must be a mapping: metric, condition, threshold")
        unknown = sorted(set(raw) - {"metric", "metric_name", "condition", "threshold", "expr"})
        if unknown:
            allowed = "metric, condition, threshold, expr"
            raise RuleError(rule, f"{where}.{unknown[0]}", f"unknown field (allowed: {allowed})")
        metric = raw.get("metric", raw.get("metric_name"))
        expr = raw.get("expr")
        if not isinstance(metric, str) or not metric:
            raise RuleError(rule, f"{where}.metric", "must be a metric's name")
        if expr is not None and (not isinstance(expr, str) or not expr.strip()):
            raise RuleError(rule, f"{where}.expr", "must be a non-empty PromQL expression")
        if expr is None and spec_for(metric) is None:
            why = f"unknown metric {metric!r} (give `expr` for a custom one)"
            raise RuleError(rule, f"{where}.metric", why)
        try:
            condition = Condition(str(raw.get("condition")))
        except ValueError:
            why = f"{raw.get('condition')!r} is not one of > < >= <= == !="
            raise RuleError(rule, f"{where}.condition", why) from None
        threshold = raw.get("threshold")
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not (math.isfinite(threshold))
        ):
            raise RuleError(
                rule, f"{where}.threshold", f"must be a finite number, got {threshold!r}"
            )
        return cls(metric, condition, float(threshold), expr)

    @property
    def spec(self) -> MetricSpec | None:
        return spec_for(self.metric_name) if self.expr is None else None

    @property
    def threshold_base(self) -> float:
        spec = self.spec
        return spec.to_base(self.threshold) if spec else self.threshold

    @property
    def unit(self) -> str:
        spec = self.spec
        return spec.seed_unit if spec else ""

    def holds(self, value: float) -> bool:
        """Verdict on a measured value in seed units, compared in base units."""
        spec = self.spec
        base = spec.to_base(value) if spec else value
        return self.condition.holds(base, self.threshold_base)

    def entry(self) -> dict[str, Any]:
        """As a `rules:` entry writes it."""
        out: dict[str, Any] = {"metric": self.metric_name, "condition": self.condition.value,
                               "threshold": self.threshold}  # fmt: skip
        if isinstance(self.threshold, float) and self.threshold.is_integer():
            out["threshold"] = int(self.threshold)
        if self.expr is not None:
            out["expr"] = self.expr
        return out


#: How a rule's conditions combine.
MATCHES = ("all", "any")
#: Anomaly rules: the value's distance from its mean over a trailing window in standard
#: deviations (stddev), or its ratio to the same time a week before, either way (week).
ANOMALIES = ("stddev", "week")


@dataclass(frozen=True, slots=True)
class AlertRule:
    """A threshold rule, the single source of truth for every generated artefact.

    Thresholds are in the seed metric's units (percent, MiB, ms, docs/s, ratio).

    >>> r = AlertRule("high_cpu", "system.cpu.percent", ">", 80, "warning", for_seconds=300)
    >>> r.threshold_base
    0.8
    """

    name: str
    metric_name: str
    condition: Condition
    threshold: float
    severity: Severity
    cooldown_seconds: float = 300
    labels: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    enabled: bool = True
    for_seconds: int = 0
    window_seconds: int = 300
    expr: str | None = None
    #: The escalation policy of this rule's alerts (bridge.core.policies), before routing.
    escalation: str | None = None
    #: Extra annotations of its alerts (runbook_url, dashboard_url, ...), after summary and
    #: description, which the rule writes itself.
    annotations: Mapping[str, str] = field(default_factory=dict)
    #: More conditions (on the same or other metrics), joined to the first by `match`: all
    #: must hold, or any; `for` applies to the whole.
    also: tuple[Clause, ...] = ()
    match: str = "all"
    #: When its alerts are notified (bridge.core.windows): outside it Prometheus fires them
    #: and Alertmanager holds them (active_time_intervals); None: always.
    when: Window | None = None
    #: An anomaly rule (ANOMALIES): its threshold is a number of standard deviations, or a
    #: ratio; `anomaly_window` the trailing window of stddev.
    anomaly: str | None = None
    anomaly_window: int = 3600

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not RULE_NAME_RE.match(name):
            raise RuleError(str(name), "name", "must match [a-zA-Z_][a-zA-Z0-9_]*")
        if not isinstance(self.metric_name, str) or not self.metric_name:
            raise RuleError(name, "metric_name", "must be a non-empty string")
        if self.expr is not None and (not isinstance(self.expr, str) or not self.expr.strip()):
            raise RuleError(name, "expr", "must be a non-empty PromQL expression")
        if self.expr is None and spec_for(self.metric_name) is None:
            raise RuleError(
                name,
                "metric_name",
                f"unknown metric {self.metric_name!r} (give `expr` for a custom one)",
            )
        try:
            object.__setattr__(self, "condition", Condition(self.condition))
        except ValueError:
            raise RuleError(
                name, "condition", f"{self.condition!r} is not one of > < >= <= == !="
            ) from None
        try:
            object.__setattr__(self, "severity", Severity(self.severity))
        except ValueError:
            allowed = "|".join(s.value for s in Severity)
            raise RuleError(
                name, "severity", f"{self.severity!r} is not one of {allowed}"
            ) from None
        threshold = self.threshold
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise RuleError(name, "threshold", f"must be a number, got {threshold!r}")
        if not math.isfinite(threshold):
            raise RuleError(name, "threshold", f"must be finite, got {threshold!r}")
        object.__setattr__(self, "threshold", float(threshold))
        cooldown = self.cooldown_seconds
        if isinstance(cooldown, bool) or not isinstance(cooldown, int | float):
            raise RuleError(name, "cooldown_seconds", f"must be a number, got {cooldown!r}")
        if not math.isfinite(cooldown) or cooldown < 0:
            raise RuleError(name, "cooldown_seconds", f"must be >= 0, got {cooldown!r}")
        for fname in ("for_seconds", "window_seconds"):
            try:
                object.__setattr__(self, fname, parse_duration(getattr(self, fname)))
            except ValueError as exc:
                raise RuleError(name, fname, str(exc)) from None
        if self.window_seconds <= 0:
            raise RuleError(name, "window_seconds", "must be positive")
        if not isinstance(self.enabled, bool):
            raise RuleError(name, "enabled", f"must be true or false, got {self.enabled!r}")
        if not isinstance(self.description, str):
            raise RuleError(name, "description", "must be a string")
        if self.escalation is not None and (
            not isinstance(self.escalation, str) or not self.escalation
        ):
            raise RuleError(name, "escalation", "must be the name of an escalation policy")
        object.__setattr__(self, "labels", _frozen_labels(name, self.labels))
        object.__setattr__(self, "annotations", _frozen_annotations(name, self.annotations))
        if not isinstance(self.also, list | tuple):
            raise RuleError(name, "also", "must be a list of conditions")
        clauses = tuple(c if isinstance(c, Clause) else Clause.parse(name, i, c)
                        for i, c in enumerate(self.also))  # fmt: skip
        object.__setattr__(self, "also", clauses)
        if self.match not in MATCHES:
            raise RuleError(name, "match", f"must be all or any, got {self.match!r}")
        if self.anomaly is not None:
            self._check_anomaly()
        if self.when is not None and not isinstance(self.when, Window):
            try:
                object.__setattr__(self, "when", parse_window(self.when, "-", "when"))
            except ConfigError as exc:
                raise RuleError(name, exc.key, exc.reason) from None

    def _check_anomaly(self) -> None:
        name = self.name
        if self.anomaly not in ANOMALIES:
            raise RuleError(name, "anomaly", f"must be stddev or week, got {self.anomaly!r}")
        if self.condition is not Condition.GT:
            raise RuleError(name, "condition", "an anomaly rule fires above its threshold: >")
        if self.threshold <= (1 if self.anomaly == "week" else 0):
            least = "a ratio above 1" if self.anomaly == "week" else "above 0 deviations"
            raise RuleError(name, "threshold", f"must be {least}, got {self.threshold:g}")
        if self.also:
            raise RuleError(name, "also", "an anomaly rule has one condition")
        try:
            window = parse_duration(self.anomaly_window)
        except ValueError as exc:
            raise RuleError(name, "anomaly_window", str(exc)) from None
        if not 120 <= window <= 7 * 86400:
            raise RuleError(name, "anomaly_window", "must be 2m to 1w")
        object.__setattr__(self, "anomaly_window", window)

    @property
    def input_key(self) -> str:
        """What the in-process evaluator reads for it: the metric's value, or an anomaly
        rule's score (bridge.telemetry.embedded computes it)."""
        if self.anomaly is None:
            return self.metric_name
        return f"{self.anomaly}:{self.anomaly_window}:{self.metric_name}"

    @property
    def spec(self) -> MetricSpec | None:
        """The catalogue entry of this rule's metric (None for a custom `expr` rule)."""
        return spec_for(self.metric_name) if self.expr is None else None

    @property
    def threshold_base(self) -> float:
        """The threshold in Prometheus base units (an anomaly rule's is a pure number)."""
        spec = self.spec
        return spec.to_base(self.threshold) if spec and self.anomaly is None else self.threshold

    @property
    def unit(self) -> str:
        """The seed unit of the threshold, empty for a custom rule."""
        if self.anomaly is not None:
            return "stddev" if self.anomaly == "stddev" else "x"
        spec = self.spec
        return spec.seed_unit if spec else ""

    def holds(self, value: float) -> bool:
        """Verdict on a measured value in seed units, compared in base units as Prometheus does
        (an anomaly rule's value is its score: deviations, or the ratio either way)."""
        if self.anomaly == "week":  # the ratio either way
            return value > self.threshold or value < 1 / self.threshold
        if self.anomaly is not None:
            return self.condition.holds(value, self.threshold)
        spec = self.spec
        base = spec.to_base(value) if spec else value
        return self.condition.holds(base, self.threshold_base)

    @property
    def metrics(self) -> tuple[str, ...]:
        """Every metric its conditions read, the first's first."""
        return tuple(dict.fromkeys([self.metric_name, *(c.metric_name for c in self.also)]))

    def holds_in(self, values: Mapping[str, float]) -> float | None:
        """Verdict of every condition on the measured values (seed units, by metric): the
        value the alert shows when the rule holds (the first condition's, or with `any` the
        first condition that holds), None when it does not. A metric without a value does not
        hold, as a PromQL comparison on a missing series yields nothing.

        >>> r = AlertRule("x", "system.cpu.percent", ">", 90, "critical",
        ...               also=[{"metric": "errors.rate", "condition": ">", "threshold": 0.05}])
        >>> r.holds_in({"system.cpu.percent": 95, "errors.rate": 0.1})
        95
        >>> r.holds_in({"system.cpu.percent": 95}) is None
        True
        """
        first = values.get(self.input_key)
        verdicts = [(first, first is not None and self.holds(first))]
        for clause in self.also:
            value = values.get(clause.metric_name)
            verdicts.append((value, value is not None and clause.holds(value)))
        if self.match == "any":
            return next((v for v, held in verdicts if held), None)
        return first if all(held for _, held in verdicts) else None

    def replace(self, **changes: Any) -> AlertRule:
        """A copy with fields changed (validated again)."""
        values = {f: getattr(self, f) for f in self.__dataclass_fields__}
        values.update(changes)
        return AlertRule(**values)


def comma_list(text: str) -> list[str]:
    """The items of a comma-separated setting (targets, URLs), stripped, empty ones dropped.

    >>> comma_list(" a:1, b:2,, ")
    ['a:1', 'b:2']
    """
    return [item.strip() for item in text.split(",") if item.strip()]
