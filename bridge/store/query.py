"""Parse alert-listing parameters (from a query string or CLI flags) into an AlertQuery."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from bridge.core.alerts import parse_time
from bridge.core.errors import InvalidInput
from bridge.core.matchers import Matcher
from bridge.core.times import parse_duration_ns
from bridge.store.records import AlertQuery

MAX_LIMIT = 1000
MAX_ID = 2**63 - 1  # SQLite's largest integer
MAX_SEARCH = 200  # characters of a free-text search
_UINT = re.compile(r"[0-9]{1,19}", re.ASCII)


def parse_int(raw: str, name: str, low: int, high: int, what: str = "an integer") -> int:
    """An ASCII decimal integer within low..high; InvalidInput names the parameter."""
    if _UINT.fullmatch(raw) and low <= int(raw) <= high:
        return int(raw)
    raise InvalidInput(name, f"must be {what} from {low} to {high}, got {raw[:40]!r}")


def parse_id(raw: str, name: str = "id") -> int:
    """An alert id (1..2^63-1)."""
    return parse_int(raw, name, 1, MAX_ID, "an alert id")


def parse_when(value: str, name: str, now: int) -> int:
    """RFC 3339, or a Prometheus duration meaning that long before `now` ("2h"); ns."""
    try:
        ago = parse_duration_ns(value)
    except ValueError:
        pass
    else:
        if ago > now:
            raise InvalidInput(name, f"{value[:40]!r} ago is before 1970-01-01")
        return now - ago
    try:
        parsed = parse_time(value, name)
    except InvalidInput as exc:
        if "outside the range" in exc.message:  # a real instant the store cannot hold
            raise
        raise InvalidInput(
            name,
            "must be RFC 3339 or a Prometheus duration like 2h, 1h30m or 7d (units y w d h m s"
            f" ms, largest first, each once), got {value[:64]!r}",
        ) from None
    if parsed is None:
        raise InvalidInput(name, "must not be the zero time")
    return parsed


SORTS = ("newest", "attention")
_ATTENTION_CURSOR = re.compile(r"a([0-3])\.([0-4])\.([0-9]{1,19})", re.ASCII)


def parse_alert_query(
    params: Mapping[str, Sequence[str]], now: int, default_sort: str = "newest"
) -> AlertQuery:
    """status, severity (repeated or comma-separated), rule, filter (repeated matchers),
    since, until, acknowledged, am_state, q (text), sort, limit, cursor -> AlertQuery;
    InvalidInput names the parameter."""

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
    limit = parse_int(one("limit") or "50", "limit", 1, MAX_LIMIT)
    sort = one("sort") or default_sort
    if sort not in SORTS:
        raise InvalidInput("sort", f"must be one of {', '.join(SORTS)}, got {sort!r:.40}")
    am_state = one("am_state") or None
    if am_state not in (None, "active", "suppressed"):
        raise InvalidInput("am_state", f"must be active or suppressed, got {am_state!r:.40}")
    cursor = one("cursor")
    before_id, after = None, None
    if cursor and sort == "attention":
        match = _ATTENTION_CURSOR.fullmatch(cursor)
        if match is None or int(match[3]) > MAX_ID:
            raise InvalidInput("cursor", "must be the next_cursor of a page in this order")
        after = (int(match[1]), int(match[2]), int(match[3]))
    elif cursor:
        before_id = parse_int(cursor, "cursor", 1, MAX_ID, "the next_cursor of a page")
    since, until = one("since"), one("until")
    text = one("q") or None
    if text is not None and len(text) > MAX_SEARCH:
        raise InvalidInput("q", f"at most {MAX_SEARCH} characters")
    return AlertQuery(
        status=status,
        severities=severities,
        rule=one("rule") or None,
        matchers=tuple(Matcher.parse(m) for m in params.get("filter", [])),
        since=parse_when(since, "since", now) if since else None,
        until=parse_when(until, "until", now) if until else None,
        acknowledged=acknowledged,
        am_state=am_state,
        text=text,
        limit=limit,
        before_id=before_id,
        sort=sort,
        after=after,
    )
