"""Alertmanager-style label matchers: `name="value"`, `name!="v"`, `name=~"re"`, `name!~"re"`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bridge.errors import InvalidInput

_MATCHER = re.compile(r"^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")
OPS = ("=", "!=", "=~", "!~")


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher; regexes are anchored, as in Prometheus.

    >>> Matcher.parse('team=~"infra|search"').matches({"team": "search"})
    True
    """

    name: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Matcher:
        match = _MATCHER.match(text)
        if not match:
            raise InvalidInput("matcher", f'not a label matcher like team="infra": {text!r}')
        name, op, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        if op in ("=~", "!~"):
            try:
                re.compile(value)
            except re.error as exc:
                raise InvalidInput(
                    "matcher", f"bad regular expression in {text!r}: {exc}"
                ) from None
        return cls(name, op, value)

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether a label set matches (a missing label is the empty string)."""
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = re.fullmatch(self.value, actual) is not None
        return found if self.op == "=~" else not found
