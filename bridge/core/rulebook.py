"""Rules managed while running: changes to the rule set one rule at a time, validated as the
configuration file's `rules:` are, kept as numbered versions with the difference each made.

A version holds the whole rule set as the entries of a `rules:` list (`entries_of`): a default
rule appears only with the fields changed from its default, any other rule with the fields
that differ from AlertRule's defaults. The entries are derived from the rules, never taken as
given, so that the same rule set is always the same document whatever form a change came in
(a PUT of what a GET answered, a YAML file, a CLI flag).

>>> from bridge.core.rules import RuleSet
>>> rules = set_enabled(RuleSet.default(), "high_cpu", False)
>>> entries_of(rules)
[{'name': 'high_cpu', 'enabled': False}]
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import yaml

from bridge.core.errors import Conflict, NotFound, RuleError
from bridge.core.humanize import HUMANIZERS
from bridge.core.model import AlertRule
from bridge.core.rules import DEFAULT_RULES, OVERRIDABLE, RuleSet, load_rules, rule_fields

#: How rules are managed: over the API (changes are versions in the store), or read-only
#: (the configuration file is the rule set; keep it in git, `rules generate` by hand).
MODES = ("api", "read-only")

#: What a change is called in the history.
ACTIONS = ("seeded", "created", "updated", "deleted", "enabled", "disabled", "rolled back")

#: Fields of a rule as the API shows it that a change may carry back and are ignored (they
#: are derived from the others): a client may PUT what it got.
DERIVED = frozenset({"unit", "threshold_base", "threshold_base_text", "state", "firing"})

_DEFAULTS = {r.name: r for r in DEFAULT_RULES}
_YAML_KEY = {"metric_name": "metric", "for_seconds": "for", "window_seconds": "window",
             "cooldown_seconds": "cooldown_seconds", "anomaly_window": "over"}  # fmt: skip
_BLANK = {f.name: f.default for f in fields(AlertRule) if f.name != "name"}


@dataclass(frozen=True, slots=True)
class RuleVersion:
    """One version of the managed rule set: who made it, when (ns), what it did to which
    rule, the whole rule set after it (`entries`) and the difference (unified, YAML)."""

    version: int
    at: int
    actor: str
    action: str
    rule: str
    entries: tuple[Mapping[str, Any], ...]
    diff: str

    def rules(self) -> RuleSet:
        """The rule set of this version."""
        return load_rules(list(self.entries), f"rule set version {self.version}")

    def record(self, entries: bool = False) -> dict[str, Any]:
        """As the API answers it (the entries only when asked: they are the whole set)."""
        out: dict[str, Any] = {
            "version": self.version, "at": self.at, "actor": self.actor,
            "action": self.action, "rule": self.rule, "diff": self.diff,
        }  # fmt: skip
        if entries:
            out["entries"] = [dict(e) for e in self.entries]
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, enum.Enum):
        return value.value  # Condition, Severity
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def entry_of(rule: AlertRule, full: bool = False) -> dict[str, Any]:
    """The `rules:` entry of `rule`: for a default rule the fields changed from its default,
    for another the fields that differ from AlertRule's defaults (`full`: every field)."""
    base = _DEFAULTS.get(rule.name)
    out: dict[str, Any] = {"name": rule.name}
    for name in rule.__dataclass_fields__:
        if name == "name":
            continue
        value = getattr(rule, name)
        if not full:
            if base is not None and value == getattr(base, name):
                continue
            if base is None and (value == _BLANK.get(name) or (isinstance(value, Mapping)
                                                                and not value)):  # fmt: skip
                continue
        if name == "expr" and value is None and not full:
            continue
        if name == "also":
            out["also"] = [clause.entry() for clause in value]
            continue
        if name == "when":
            out["when"] = value.entry() if value is not None else None
            continue
        out[_YAML_KEY.get(name, name)] = _plain(value)
    for required in ("metric", "condition", "threshold", "severity"):  # a new rule's own
        if base is None and required not in out:
            out[required] = _plain(getattr(rule, "metric_name" if required == "metric"
                                           else required))  # fmt: skip
    return out


def rule_record(rule: AlertRule) -> dict[str, Any]:
    """A rule as the API and `rules list -o json` show it (every field, and the threshold
    in base units)."""
    spec = rule.spec
    return {
        "name": rule.name,
        "metric": rule.metric_name,
        "condition": rule.condition.value,
        "threshold": rule.threshold,
        "unit": rule.unit,
        "threshold_base": rule.threshold_base,
        "threshold_base_text": HUMANIZERS[spec.humanize](rule.threshold_base) if spec else None,
        "severity": rule.severity.value,
        "cooldown_seconds": rule.cooldown_seconds,
        "for_seconds": rule.for_seconds,
        "window_seconds": rule.window_seconds,
        "labels": dict(rule.labels),
        "description": rule.description,
        "enabled": rule.enabled,
        "expr": rule.expr,
        "escalation": rule.escalation,
        "also": [clause.entry() for clause in rule.also],
        "match": rule.match,
        "when": rule.when.entry() if rule.when is not None else None,
        "anomaly": rule.anomaly,
        "over": rule.anomaly_window,
    }


def entries_of(rules: RuleSet) -> list[dict[str, Any]]:
    """The `rules:` list of a rule set (default rules unchanged are not in it)."""
    entries = [entry_of(r) for r in rules]
    return [e for e in entries if len(e) > 1 or e["name"] not in _DEFAULTS]


def as_yaml(entries: Sequence[Mapping[str, Any]]) -> str:
    """The entries as the `rules:` of a configuration file."""
    text: str = yaml.safe_dump({"rules": [dict(e) for e in entries]}, sort_keys=False,
                               allow_unicode=True)  # fmt: skip
    return text


def _fields(name: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(entry, Mapping):
        raise RuleError(name, "-", "a rule must be an object of its fields")
    clean = {k: v for k, v in entry.items() if k not in DERIVED}
    given = clean.get("name", name)
    if given != name:
        raise RuleError(name, "name", f"is {given!r} in the body; a rule is renamed by"
                        " deleting it and creating another")  # fmt: skip
    clean["name"] = name
    return rule_fields(clean, name)


def rule_from(name: str, entry: Mapping[str, Any]) -> AlertRule:
    """The rule `name` of an entry (or of a rule as the API shows it); for a default rule
    the fields it may change, on its default."""
    values = _fields(name, entry)
    base = _DEFAULTS.get(name)
    if base is None:
        missing = [k for k in ("metric_name", "condition", "threshold", "severity")
                   if k not in values]  # fmt: skip
        if missing:
            raise RuleError(name, _YAML_KEY.get(missing[0], missing[0]), "required for a new rule")
        try:
            return AlertRule(**values)
        except TypeError as exc:
            raise RuleError(name, "-", str(exc)) from None
    values.pop("name")
    for key in sorted(set(values)):  # a default's own fields may come back unchanged
        given = tuple(values[key]) if isinstance(values[key], list) else values[key]
        if key not in _OVERRIDABLE_FIELDS and given == getattr(base, key):
            del values[key]
    bad = sorted(set(values) - _OVERRIDABLE_FIELDS)
    if bad:
        why = "cannot be changed on a default rule (create a new rule instead)"
        raise RuleError(name, _YAML_KEY.get(bad[0], bad[0]), why)
    return base.replace(**values)


_OVERRIDABLE_FIELDS = frozenset(rule_fields(dict.fromkeys(OVERRIDABLE), "-"))


def _get(rules: RuleSet, name: str) -> AlertRule:
    rule = rules.get(name)
    if rule is None:
        raise NotFound(f"no rule named {name!r}")
    return rule


def create(rules: RuleSet, entry: Mapping[str, Any]) -> RuleSet:
    """`rules` with a new rule; Conflict if its name is taken."""
    name = entry.get("name") if isinstance(entry, Mapping) else None
    if not isinstance(name, str) or not name:
        raise RuleError("-", "name", "a new rule needs a name")
    if rules.get(name) is not None or name in _DEFAULTS:
        raise Conflict(f"a rule named {name!r} exists; change it with PUT (rules edit)")
    return RuleSet((*rules, rule_from(name, entry)))


def update(rules: RuleSet, name: str, entry: Mapping[str, Any], merge: bool = False) -> RuleSet:
    """`rules` with rule `name` replaced by `entry` (`merge`: the fields of `entry` changed,
    the others kept). A default rule takes only the fields that may be overridden."""
    old = _get(rules, name)
    if merge:
        entry = {**entry_of(old, full=True), **entry}
    elif name in _DEFAULTS:
        entry = {**entry_of(_DEFAULTS[name], full=True), **entry}  # unnamed fields: defaults
    new = rule_from(name, entry)
    return RuleSet(tuple(new if r.name == name else r for r in rules))


def delete(rules: RuleSet, name: str) -> RuleSet:
    """`rules` without rule `name`; a default rule is disabled instead of deleted."""
    _get(rules, name)
    if name in _DEFAULTS:
        raise Conflict(f"{name} is a default rule: it cannot be deleted; disable it")
    return RuleSet(tuple(r for r in rules if r.name != name))


def set_enabled(rules: RuleSet, name: str, enabled: bool) -> RuleSet:
    """`rules` with rule `name` enabled or disabled."""
    old = _get(rules, name)
    return RuleSet(tuple(old.replace(enabled=enabled) if r.name == name else r for r in rules))


def difference(before: RuleSet, after: RuleSet, names: Sequence[str] = ()) -> str:
    """What changed, as a unified diff of the rules' full YAML (only `names` when given)."""

    def text(rules: RuleSet) -> list[str]:
        chosen = [r for r in rules if not names or r.name in names]
        return as_yaml([entry_of(r, full=True) for r in chosen]).splitlines(keepends=True)

    lines = difflib.unified_diff(text(before), text(after), "before", "after", n=1)
    return "".join(lines)
