"""Times and durations: integer nanoseconds since the epoch (UTC), RFC 3339 text both ways,
and Prometheus's duration grammar."""

from __future__ import annotations

import calendar
import functools
import math
import re
import time

NS = 1_000_000_000
#: Go's zero time: Alertmanager's "not set" (endsAt of a firing alert).
ZERO_TIME = "0001-01-01T00:00:00Z"
ZERO_TIME_YEAR = 1
#: The times the store represents: integer nanoseconds from 1970 to the end of int64.
MIN_TIME_NS = 0
MAX_TIME_NS = 2**63 - 1  # 2262-04-11T23:47:16.854775807Z
TIME_RANGE = "1970-01-01T00:00:00Z to 2262-04-11T23:47:16.854775807Z"
_RFC3339 = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$",
    re.ASCII,
)
# Prometheus's duration grammar (model.ParseDuration): units in this order, each at most once.
_DURATION_RE = re.compile(
    r"^(?:([0-9]+)y)?(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?"
    r"(?:([0-9]+)ms)?$",
    re.ASCII,
)
_UNIT_NS = (365 * 86400 * 10**9, 7 * 86400 * 10**9, 86400 * 10**9, 3600 * 10**9, 60 * 10**9,
            10**9, 10**6)  # fmt: skip
MAX_DURATION_NS = 2**63 - 1  # Go's time.Duration, as Prometheus


def now_ns() -> int:
    return time.time_ns()


def format_time(ns: int | None) -> str | None:
    """ns since the epoch -> RFC 3339 UTC with the fraction it needs (None stays None).

    >>> format_time(1795428000500000000)
    '2026-11-23T10:00:00.5Z'
    """
    if ns is None:
        return None
    seconds, frac = divmod(ns, NS)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + "Z"


def format_micros(ns: int) -> str:
    """ns since the epoch -> RFC 3339 UTC with six fraction digits (what Alertmanager's API
    is given).

    >>> format_micros(1795428000500000000)
    '2026-11-23T10:00:00.500000Z'
    """
    seconds, frac = divmod(ns, NS)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac // 1000:06d}Z"


def in_range(ns: int | None, text: str) -> int | None:
    if ns is not None and not MIN_TIME_NS <= ns <= MAX_TIME_NS:
        raise ValueError(f"outside the range this store holds ({TIME_RANGE}): {text!r}")
    return ns


@functools.lru_cache(maxsize=4096)
def parse_rfc3339(value: str) -> int | None:
    """RFC 3339 with up to nanosecond fractions -> ns since the epoch; None for Go's zero
    time. Offsets up to +-23:59. ValueError naming what is wrong (not the range: in_range).

    >>> parse_rfc3339("2026-11-23T11:00:00.5+01:00")
    1795428000500000000
    """
    # Alerts of one group share endsAt (the zero time while firing) and often startsAt.
    match = _RFC3339.match(value)
    if not match:
        raise ValueError(f"not an RFC 3339 timestamp: {value[:64]!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    if year == ZERO_TIME_YEAR:
        return None
    fraction, zone = match.group(7) or "", match.group(8)
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        raise ValueError(f"not a valid date and time: {value!r}")
    try:
        seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
        calendar.weekday(year, month, day)  # rejects 2026-02-30
    except ValueError:
        raise ValueError(f"not a valid date: {value!r}") from None
    if zone not in ("Z", "z"):
        offset_hours, offset_minutes = int(zone[1:3]), int(zone[4:6])
        if offset_hours > 23 or offset_minutes > 59:
            raise ValueError(f"UTC offset must be within -23:59 and +23:59: {value!r}")
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (offset_hours * 3600 + offset_minutes * 60)
    return seconds * 1_000_000_000 + int(fraction.ljust(9, "0") or 0)


def parse_duration_ns(text: str) -> int:
    """Nanoseconds from a Prometheus duration: `[0-9]+` with units y w d h m s ms, in that
    order, each at most once ("1h30m", "90s", "500ms"); "0" is zero. ValueError otherwise.

    >>> parse_duration_ns("1m30s")
    90000000000
    """
    text = text.strip()
    if text == "0":
        return 0
    match = _DURATION_RE.match(text)
    if not text or not match:
        raise ValueError(
            "expected a duration like 30s, 5m, 1h30m or 7d (units y w d h m s ms, each once,"
            f" largest first), got {text!r}"
        )
    total = sum(int(g) * unit for g, unit in zip(match.groups(), _UNIT_NS, strict=True) if g)
    if total > MAX_DURATION_NS:
        raise ValueError(f"expected a duration of at most 292 years, got {text!r}")
    return total


def parse_duration(value: object) -> int:
    """Whole seconds from a Prometheus duration ("90s", "5m", "1h30m", "1d") or a number.

    >>> parse_duration("1h30m")
    5400
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0 or value != int(value):
            raise ValueError(f"expected a whole, non-negative number of seconds, got {value!r}")
        return int(value)
    if isinstance(value, str):
        seconds, rest = divmod(parse_duration_ns(value), 10**9)
        if rest:
            raise ValueError(f"expected whole seconds, got {value!r}")
        return seconds
    raise ValueError(f"expected a duration like 30s, 5m or 1h, got {value!r}")


def format_duration(seconds: int) -> str:
    """Prometheus duration text for whole seconds.

    >>> format_duration(5400)
    '1h30m'
    """
    if seconds == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)
