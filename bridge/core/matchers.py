"""Alertmanager-style label matchers: `name="value"`, `name!="v"`, `name=~"re"`, `name!~"re"`.

Label names as Alertmanager 0.27 takes them (UTF-8 names, such as OpenTelemetry's
`service.name`): a classic name, a quoted one (`"service.name"="checkout"`, with `\"` and
`\\` escapes), or an unquoted run of anything but whitespace and `{}!=~,\"'` and backquote.

Regular expressions are Go's RE2 syntax, anchored at both ends, as Alertmanager and
Prometheus match them, evaluated with Google's RE2 (`google-re2`): linear in the length of
the value whatever the pattern, so no pattern can make a listing backtrack for seconds.
What Go's regexp rejects is an InvalidInput here too (backreferences, lookaround, possessive
repetitions, and two C++-only forms RE2 would otherwise take: `\\C` and `(?<name>...)`).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import re2

from bridge.core.errors import InvalidInput

_QUOTED = r'"(?:[^"\\]|\\.)*"'
_BARE = r"[^\s{}!=~,\\\"'`]+"
_MATCHER = re.compile(rf"^\s*({_QUOTED}|{_BARE})\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.DOTALL)
_CLASSIC_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*", re.ASCII)
OPS = ("=", "!=", "=~", "!~")
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a client's bad pattern is its error, answered, not logged
_OPTIONS.max_mem = 8 << 20  # RE2's default; bounds the compiled program of any pattern
MAX_PATTERN = 4096  # characters; Alertmanager takes longer, nobody writes them
# Accepted by C++ RE2 but not by Go's regexp (so not by Alertmanager 0.25): \C (any byte)
# and the (?<name>...) group syntax (Go 1.22+; Debian builds 0.25 with an older Go).
_NOT_GO = re.compile(r"(?<!\\)(?:\\\\)*(?:\\C|\(\?<(?![=!]))")


class PatternError(InvalidInput):
    """A regular expression RE2 (Go's syntax) does not accept."""


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> Any:
    """The anchored RE2 program of a matcher's pattern; PatternError when Go would reject it."""
    if len(pattern) > MAX_PATTERN:
        raise PatternError("matcher", f"regular expression longer than {MAX_PATTERN} characters")
    if _NOT_GO.search(pattern):
        raise PatternError("matcher", f"bad regular expression {pattern[:80]!r}: not Go syntax")
    try:
        return re2.compile(f"^(?:{pattern})$", _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid"
        if isinstance(reason, bytes):
            reason = reason.decode(errors="replace")
        message = f"bad regular expression {pattern[:80]!r}: {reason}"
        raise PatternError("matcher", message) from None


def regex_matches(pattern: str, value: str | None) -> bool:
    """Whether the whole value matches the pattern (a missing value is the empty string)."""
    return compile_pattern(pattern).search(value or "") is not None


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
            raise InvalidInput("matcher", f'not a label matcher like team="infra": {text[:100]!r}')
        name, op, value = match.groups()
        if name[0] == '"':
            name = _unquote(name)
            if not name:
                raise InvalidInput("matcher", f"a label name cannot be empty: {text[:100]!r}")
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = _unquote(value)
        if op in ("=~", "!~"):
            compile_pattern(value)
        return cls(name, op, value)

    def __str__(self) -> str:
        """The matcher as text Matcher.parse reads back (the name quoted when it is not a
        classic one)."""
        name = self.name if _CLASSIC_NAME.fullmatch(self.name) else _quote(self.name)
        return f"{name}{self.op}{_quote(self.value)}"

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether a label set matches (a missing label is the empty string)."""
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = regex_matches(self.value, actual)
        return found if self.op == "=~" else not found


def _unquote(text: str) -> str:
    """A quoted name or value without its quotes and its escaped quotes and backslashes
    (other backslashes stay: `"a\\.b"` is the regular expression a\\.b)."""
    return re.sub(r'\\(["\\])', r"\1", text[1:-1])


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
