"""The enrichment map (`enrichment:` in the config): label matchers to extra fields (owner,
runbook, team, ...) that a new episode gets in a field of its own, never in its labels, which
stay what Alertmanager sent (silences and fingerprints depend on them).

>>> rules = load_enrichment([{"matchers": ['team="db"'], "fields": {"owner": "dba"}}], "f")
>>> fields_for(rules, {"team": "db"}), fields_for(rules, {"team": "web"})
({'owner': 'dba'}, {})
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bridge.core.errors import ConfigError
from bridge.core.matchers import Matcher
from bridge.core.policies import config_matchers

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True, slots=True)
class EnrichRule:
    matchers: tuple[Matcher, ...]
    fields: Mapping[str, str]


def fields_for(rules: Sequence[EnrichRule], labels: Mapping[str, str]) -> dict[str, str]:
    """Every matching entry's fields, later entries overriding earlier ones."""
    out: dict[str, str] = {}
    plain = dict(labels)
    for rule in rules:
        if all(m.matches(plain) for m in rule.matchers):
            out.update(rule.fields)
    return out


def load_enrichment(raw: object, source: str) -> tuple[EnrichRule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(source, "enrichment", "must be a list of {matchers, fields}")
    out = []
    for i, entry in enumerate(raw):
        key = f"enrichment[{i}]"
        if not isinstance(entry, Mapping) or set(entry) - {"matchers", "fields"}:
            raise ConfigError(source, key, "must be {matchers: [...], fields: {name: text}}")
        matchers = config_matchers(entry.get("matchers") or [], source, f"{key}.matchers")
        fields = entry.get("fields")
        if not isinstance(fields, Mapping) or not fields:
            raise ConfigError(
                source, f"{key}.fields", "must be a non-empty mapping of name to text"
            )
        for name, value in fields.items():
            if not isinstance(name, str) or not _NAME.match(name):
                raise ConfigError(source, f"{key}.fields", f"{name!r} is not a field name")
            if not isinstance(value, str):
                raise ConfigError(source, f"{key}.fields.{name}", "must be a text")
        out.append(EnrichRule(matchers, dict(fields)))
    return tuple(out)
