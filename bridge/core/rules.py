"""The rule set: the ten defaults, loading rules from YAML config, overrides and validation."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.core.errors import RuleError
from bridge.core.model import AlertRule, Condition, Severity
from bridge.core.windows import Window

W, C = Severity.WARNING, Severity.CRITICAL


def _default(
    name: str, metric: str, cond: Condition, threshold: float, sev: Severity, text: str
) -> AlertRule:
    # Criticals wait less: by the time a warning has held 5m its critical twin (if any) fired.
    return AlertRule(
        name=name,
        metric_name=metric,
        condition=cond,
        threshold=threshold,
        severity=sev,
        for_seconds=120 if sev is C else 300,
        description=text,
    )


#: The ten default rules (DESIGN.md), thresholds in seed units.
DEFAULT_RULES: tuple[AlertRule, ...] = (
    _default("high_cpu", "system.cpu.percent", Condition.GT, 80, W, "CPU usage is high"),
    _default("critical_cpu", "system.cpu.percent", Condition.GT, 95, C, "CPU is saturated"),
    _default("high_memory", "system.memory.used_mb", Condition.GT, 2048, W, "Memory use is high"),
    _default(
        "critical_memory",
        "system.memory.used_mb",
        Condition.GT,
        2560,
        C,
        "Memory is nearly exhausted",
    ),
    _default("slow_search", "search.latency.p95", Condition.GT, 1000, W, "Searches are slow"),
    _default(
        "very_slow_search", "search.latency.p95", Condition.GT, 2000, C, "Searches are very slow"
    ),
    _default(
        "low_throughput", "ingestion.throughput", Condition.LT, 5, W, "Ingestion throughput is low"
    ),
    _default(
        "very_low_throughput",
        "ingestion.throughput",
        Condition.LT,
        1,
        C,
        "Ingestion has nearly stopped",
    ),
    _default("high_error_rate", "errors.rate", Condition.GT, 0.05, W, "Error ratio is high"),
    _default(
        "critical_error_rate", "errors.rate", Condition.GT, 0.10, C, "Error ratio is critical"
    ),
)

#: Fields an override of a default rule may change.
OVERRIDABLE = frozenset(
    {
        "threshold",
        "severity",
        "cooldown_seconds",
        "for",
        "labels",
        "enabled",
        "description",
        "window",
        "escalation",
        "annotations",
        "when",
    }
)
#: YAML key -> AlertRule field.
_YAML_FIELDS = {
    "name": "name",
    "metric": "metric_name",
    "metric_name": "metric_name",
    "condition": "condition",
    "threshold": "threshold",
    "severity": "severity",
    "cooldown_seconds": "cooldown_seconds",
    "cooldown": "cooldown_seconds",
    "labels": "labels",
    "description": "description",
    "enabled": "enabled",
    "for": "for_seconds",
    "for_seconds": "for_seconds",
    "window": "window_seconds",
    "window_seconds": "window_seconds",
    "expr": "expr",
    "escalation": "escalation",
    "annotations": "annotations",
    "also": "also",
    "match": "match",
    "when": "when",
    "anomaly": "anomaly",
    "over": "anomaly_window",
}
_YAML_KEY_OF = {"metric_name": "metric", "for_seconds": "for", "window_seconds": "window",
                "anomaly_window": "over"}  # fmt: skip
_REQUIRED_NEW = ("metric", "condition", "threshold", "severity")


@dataclass(frozen=True, slots=True)
class RuleSet:
    """An ordered collection of rules with unique names.

    >>> len(RuleSet.default())
    10
    """

    rules: tuple[AlertRule, ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise RuleError(rule.name, "name", "duplicate rule name")
            seen.add(rule.name)

    @classmethod
    def default(cls) -> RuleSet:
        """The ten default rules."""
        return cls(DEFAULT_RULES)

    def __iter__(self) -> Iterator[AlertRule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def get(self, name: str) -> AlertRule | None:
        """The rule named `name`, if any."""
        return next((r for r in self.rules if r.name == name), None)

    @property
    def enabled(self) -> tuple[AlertRule, ...]:
        """Rules that are enabled, in order."""
        return tuple(r for r in self.rules if r.enabled)


#: Second spellings of fields (a rule as the API shows it), not listed among the allowed.
_ALIASES = frozenset({"metric_name", "cooldown", "for_seconds", "window_seconds"})


def rule_fields(entry: Mapping[str, Any], name: str, source: str | None = None) -> dict[str, Any]:
    """The AlertRule fields of a `rules:` entry (YAML keys to field names); RuleError for a
    key that is no field."""
    out: dict[str, Any] = {}
    for key, value in entry.items():
        fname = _YAML_FIELDS.get(str(key))
        if fname is None:
            allowed = ", ".join(sorted(set(_YAML_FIELDS) - _ALIASES))
            raise RuleError(name, str(key), f"unknown field (allowed: {allowed})", source)
        out[fname] = value
    return out


def load_rules(
    entries: object, source: str, defaults: Sequence[AlertRule] = DEFAULT_RULES
) -> RuleSet:
    """Merge the `rules:` list of a config file into the defaults.

    An entry whose name is a default rule overrides fields of it (see OVERRIDABLE); any other
    entry is a new rule and needs metric, condition, threshold and severity (metric may be any
    name when `expr` gives the PromQL). Errors name the file and the rule.
    """
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise RuleError("-", "rules", "must be a list of rule entries", source)
    by_name: dict[str, AlertRule] = {r.name: r for r in defaults}
    order: list[str] = [r.name for r in defaults]
    default_names = set(by_name)
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise RuleError(f"#{index + 1}", "-", "each rule entry must be a mapping", source)
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise RuleError(f"#{index + 1}", "name", "every rule entry needs a name", source)
        if name in seen:
            raise RuleError(name, "name", "duplicate rule name", source)
        seen.add(name)
        fields = rule_fields(entry, name, source)
        try:
            if name in default_names:
                bad = sorted(set(entry) - OVERRIDABLE - {"name"})
                if bad:
                    raise RuleError(
                        name,
                        bad[0],
                        "cannot be changed on a default rule (define a new rule instead)",
                    )
                fields.pop("name")
                by_name[name] = by_name[name].replace(**fields)
            else:
                missing = [
                    k for k in _REQUIRED_NEW if k not in entry and _YAML_FIELDS[k] not in entry
                ]
                if missing:
                    raise RuleError(name, missing[0], "required for a new rule")
                by_name[name] = AlertRule(**fields)
                order.append(name)
        except RuleError as exc:
            yaml_key = _YAML_KEY_OF.get(exc.field, exc.field)
            raise RuleError(exc.rule, yaml_key, exc.reason, source) from None
        except TypeError as exc:  # a YAML type the dataclass cannot take at all
            raise RuleError(name, "-", str(exc), source) from None
    return RuleSet(tuple(by_name[n] for n in order))


def rules_by_metric(rules: Iterable[AlertRule]) -> dict[str, list[AlertRule]]:
    """Enabled rules grouped by metric name, in order."""
    out: dict[str, list[AlertRule]] = {}
    for rule in rules:
        if rule.enabled:
            out.setdefault(rule.metric_name, []).append(rule)
    return out


class WindowHolds:
    """Whether Alertmanager holds an alert's notifications now: its rule has a window
    (`when`) that is closed. The windows of the rule set given are looked up by alertname,
    gathered again only when the rule set changes."""

    def __init__(self, rules: Callable[[], RuleSet]) -> None:
        self.rules = rules
        self._of: RuleSet | None = None
        self._windows: dict[str, Window] = {}

    def __call__(self, labels: Mapping[str, str], at: int) -> bool:
        rules = self.rules()
        if rules is not self._of:
            self._of = rules
            self._windows = {r.name: r.when for r in rules if r.when is not None}
        window = self._windows.get(labels.get("alertname", ""))
        return window is not None and not window.contains(at)
