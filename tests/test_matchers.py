"""Label matchers: Go's RE2 syntax and semantics, in linear time; what Go rejects is a 400.

The table is checked against the real Alertmanager in test_e2e_matchers.py.
"""

from __future__ import annotations

import time

import pytest

from bridge.core.errors import InvalidInput
from bridge.core.matchers import Matcher, regex_matches

VALUES = ["", "a", "b", "ab", "abc", "bc", "ABC", "aa", "aaa", "123", "\u00e9", "a.b", "axb",
          "a\nb", "x_1"]  # fmt: skip
#: Patterns both Go and RE2 take; their anchored matching of VALUES is compared with
#: Alertmanager's end to end.
ACCEPTED = ["a.*", ".*", "", "a|b", "(a|b)c", "[[:digit:]]+", "\\d+", "\\pL+", "(?i)abc",
            "a{2,3}", "a)|(b", "\\Qa.b\\E", "[^a]", ".", "(?s)a.b", "a.b", "\\w+", "\u00e9",
            "\\x{e9}", "a\\z", "^a$", "(?m)^a$", "x*", "(?U)a+", "[a-c]+", "\\.", "a\\b",
            "(?P<n>a)b"]  # fmt: skip
#: Patterns Go's regexp rejects (so Alertmanager answers 400): so must we.
REJECTED = ["(a)\\1", "(?=a)", "(?!a)b", "a++", "\\Z", "(?<n>a)", "\\C", "a{1001}", "[", "(",
            "*a", "\\8", "(?<=a)b", "a**"]  # fmt: skip


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [("a+", "aaa", True), ("a+", "aab", False), ("a|b", "ab", False), ("a)|(b", "ab", True),
     ("\\d", "\u0661", False), ("(?i)abc", "ABC", True), (".", "\n", False),
     ("(?s).", "\n", True), ("a$", "a\n", False), ("", "", True), ("x*", "", True)],
)  # fmt: skip
def test_anchored_go_semantics(pattern: str, value: str, expected: bool) -> None:
    """Anchored as Alertmanager anchors (^(?:pattern)$), \\d ASCII only, . not newline."""
    assert regex_matches(pattern, value) is expected


@pytest.mark.parametrize("pattern", REJECTED)
def test_what_go_rejects_is_invalid_input(pattern: str) -> None:
    """Backreferences, lookaround, possessive repetitions and C++-only forms are 400s."""
    with pytest.raises(InvalidInput, match="bad regular expression") as info:
        Matcher.parse(f'v=~"{pattern}"')
    assert info.value.field == "matcher"


def test_escaped_backslash_before_c_is_fine() -> None:
    """Only an unescaped \\C is refused: \\\\C is a backslash and a C."""
    assert regex_matches("\\\\C", "\\C")


def test_no_pattern_backtracks() -> None:
    """(a+)+$ on a long non-matching value: RE2 is linear (Python's re took 3 s on 26)."""
    value = "a" * 100_000 + "b"
    started = time.perf_counter()
    assert not regex_matches("(a+)+$", value)
    assert not regex_matches("([a-z0-9.-]+)+", value + "!")
    assert time.perf_counter() - started < 5.0  # about a millisecond; backtracking: years


def test_matcher_parse_and_match() -> None:
    """The four operators; a missing label is the empty string."""
    labels = {"team": "infra", "env": "prod"}
    assert Matcher.parse('team="infra"').matches(labels)
    assert Matcher.parse('team!="search"').matches(labels)
    assert Matcher.parse('team=~"in.*"').matches(labels)
    assert Matcher.parse('team!~"se.*"').matches(labels)
    assert Matcher.parse('missing=""').matches(labels)
    assert Matcher.parse('missing=~".*"').matches(labels)
    assert Matcher.parse('v=~"a\\\\.b"').value == "a\\.b"


@pytest.mark.parametrize(
    ("text", "name", "value"),
    [
        ('"service.name"="checkout"', "service.name", "checkout"),
        ("service.name=checkout", "service.name", "checkout"),
        ('"http.status code"!="200"', "http.status code", "200"),
        ('"we\\"ird"=~"x.*"', 'we"ird', "x.*"),
        ('"ünïcode"="ok"', "ünïcode", "ok"),
        ('k8s.pod-name = "web-1"', "k8s.pod-name", "web-1"),
    ],
)
def test_utf8_label_names_as_alertmanager_0_27_reads_them(text: str, name: str, value: str) -> None:
    """Quoted names (escapes \\" and \\\\) and the unquoted forms; the text they print is
    read back as the same matcher."""
    matcher = Matcher.parse(text)
    assert (matcher.name, matcher.value) == (name, value)
    assert Matcher.parse(str(matcher)) == matcher
    assert matcher.matches({name: value}) is (matcher.op in ("=", "=~"))


@pytest.mark.parametrize("text", ['""="x"', 'a{b="x"', 'a b="x"', '"unterminated="x"', "=x"])
def test_what_is_no_label_name_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match="matcher"):
        Matcher.parse(text)
