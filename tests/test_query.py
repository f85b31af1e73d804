"""Listing parameters shared by the REST API and the local CLI."""

from __future__ import annotations

import pytest

from bridge.core.errors import InvalidInput
from bridge.core.times import NS
from bridge.store.query import parse_alert_query, parse_when

NOW = 1_795_428_000 * NS


@pytest.mark.parametrize(
    ("text", "ns"),
    [("2h", NOW - 7200 * NS), ("1d12h", NOW - 129600 * NS), ("90s", NOW - 90 * NS),
     ("2026-11-23T09:00:00Z", NOW - 3600 * NS)],
)  # fmt: skip
def test_when_is_absolute_or_ago(text: str, ns: int) -> None:
    """since/until take RFC 3339 or a duration before now."""
    assert parse_when(text, "since", NOW) == ns


def test_query_from_params() -> None:
    """Repeated and comma-separated severities, matchers, limits and cursors."""
    query = parse_alert_query(
        {"severity": ["critical,error", "warning"], "filter": ['team="x"', 'a!~"b.*"'],
         "limit": ["10"], "cursor": ["77"], "acknowledged": ["False"], "status": ["firing"]},
        NOW,
    )  # fmt: skip
    assert query.severities == ("critical", "error", "warning")
    assert [(m.name, m.op, m.value) for m in query.matchers] == [("team", "=", "x"),
                                                                  ("a", "!~", "b.*")]  # fmt: skip
    assert (query.limit, query.before_id, query.acknowledged, query.status) == (
        10, 77, False, "firing")  # fmt: skip


@pytest.mark.parametrize(
    ("params", "field"),
    [({"limit": ["1001"]}, "limit"), ({"until": ["0001-01-01T00:00:00Z"]}, "until"),
     ({"status": ["acked"]}, "status")],
)  # fmt: skip
def test_query_errors(params: dict[str, list[str]], field: str) -> None:
    """Out-of-range values are named."""
    with pytest.raises(InvalidInput) as info:
        parse_alert_query(params, NOW)
    assert info.value.field == field
