"""Parse alert-listing parameters (from a query string or CLI flags) into an AlertQuery."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from bridge.errors import InvalidInput
from bridge.matchers import Matcher
from bridge.model import parse_duration
from bridge.store import NS, AlertQuery
from bridge.webhook import parse_time

MAX_LIMIT = 1000
_AGO = re.compile(r"^(\d+[smhd])+$")


def parse_when(value: str, name: str, now: int) -> int:
    """RFC 3339, or a duration meaning that long before `now` ("2h"); ns since the epoch."""
    if _AGO.match(value):
        return now - parse_duration(value) * NS
    try:
        parsed = parse_time(value, name)
    except InvalidInput:
        raise InvalidInput(name, f"must be RFC 3339 or a duration like 2h, got {value!r}") from None
    if parsed is None:
        raise InvalidInput(name, "must not be the zero time")
    return parsed


def parse_alert_query(params: Mapping[str, Sequence[str]], now: int) -> AlertQuery:
    """status, severity (repeated or comma-separated), rule, filter (repeated matchers),
    since, until, acknowledged, limit, cursor -> AlertQuery; InvalidInput names the parameter."""

    def one(name: str) -> str | None:
        values = params.get(name) or []
        return values[-1] if values else None

    status = one("status") or None
    if status not in (None, "firing", "resolved"):
        raise InvalidInput("status", f"must be firing or resolved, got {status!r}")
    severities = tuple(s for raw in params.get("severity", []) for s in raw.split(",") if s)
    acknowledged: bool | None = None
    raw_ack = one("acknowledged")
    if raw_ack is not None:
        if raw_ack.lower() not in ("true", "false"):
            raise InvalidInput("acknowledged", f"must be true or false, got {raw_ack!r}")
        acknowledged = raw_ack.lower() == "true"
    raw_limit = one("limit") or "50"
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise InvalidInput("limit", f"must be an integer from 1 to {MAX_LIMIT}, got {raw_limit!r}")
    cursor = one("cursor")
    if cursor and not cursor.isdigit():
        raise InvalidInput("cursor", "must be the next_cursor of a previous page")
    since, until = one("since"), one("until")
    return AlertQuery(
        status=status,
        severities=severities,
        rule=one("rule") or None,
        matchers=tuple(Matcher.parse(m) for m in params.get("filter", [])),
        since=parse_when(since, "since", now) if since else None,
        until=parse_when(until, "until", now) if until else None,
        acknowledged=acknowledged,
        limit=int(raw_limit),
        before_id=int(cursor) if cursor else None,
    )
