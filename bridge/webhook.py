"""Parse Alertmanager webhook notifications (version 4): one pure function, no app or I/O.

>>> n = parse_notification({"version": "4", "status": "firing", "receiver": "alertbridge",
...     "groupKey": "{}:{}", "alerts": [{"status": "firing", "fingerprint": "a1b2c3d4e5f60718",
...     "startsAt": "2026-11-23T10:00:00.5Z", "endsAt": "0001-01-01T00:00:00Z",
...     "labels": {"alertname": "high_cpu"}, "annotations": {}, "generatorURL": ""}]})
>>> n.alerts[0].starts_at
1795428000500000000
"""

from __future__ import annotations

import calendar
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from bridge.errors import InvalidInput

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$"
)
_FINGERPRINT = re.compile(r"[0-9a-f]{16}")
STATUSES = ("firing", "resolved")
ZERO_TIME_YEAR = 1  # Go's zero time, 0001-01-01T00:00:00Z, means "not set"
_ZERO_TIME = "0001-01-01T00:00:00Z"  # endsAt when absent


class InvalidPayload(InvalidInput):
    """The notification is not a valid version 4 payload; `field` is a JSON path."""


def parse_time(value: object, field: str) -> int | None:
    """RFC 3339 with up to nanosecond fractions -> integer ns since the epoch (None for zero)."""
    if not isinstance(value, str):
        raise InvalidPayload(field, f"must be an RFC 3339 timestamp string, got {value!r}")
    try:
        return _parse_time_cached(value)
    except ValueError as exc:
        raise InvalidPayload(field, str(exc)) from None


@functools.lru_cache(maxsize=4096)
def _parse_time_cached(value: str) -> int | None:
    # Alerts of one group share endsAt (the zero time while firing) and often startsAt.
    match = _RFC3339.match(value)
    if not match:
        raise ValueError(f"not an RFC 3339 timestamp: {value!r}")
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
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds * 1_000_000_000 + int(fraction.ljust(9, "0") or 0)


class ReceivedAlert(NamedTuple):
    """One alert of a notification; times in ns since the epoch.

    A named tuple rather than a frozen dataclass: it is built once per received alert, on the
    event loop, and a tuple is the cheapest immutable record to build.
    """

    fingerprint: str
    status: str
    starts_at: int
    ends_at: int | None
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    generator_url: str

    @property
    def alertname(self) -> str:
        return self.labels["alertname"]

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "")


@dataclass(frozen=True, slots=True)
class Notification:
    """A whole webhook notification."""

    receiver: str
    status: str
    group_key: str
    truncated_alerts: int
    alerts: tuple[ReceivedAlert, ...]


def _string_map(value: object, field: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise InvalidPayload(field, "must be an object of strings")
    for key, item in value.items():
        if not isinstance(item, str):
            raise InvalidPayload(f"{field}.{key}", f"must be a string, got {item!r}")
    return value


def _string(obj: Mapping[str, Any], key: str, field: str, required: bool = True) -> str:
    if key not in obj:
        if required:
            raise InvalidPayload(field, "is required")
        return ""
    value = obj[key]
    if not isinstance(value, str):
        raise InvalidPayload(field, f"must be a string, got {value!r}")
    return value


def _alert(raw: object, field: str) -> ReceivedAlert:
    if not isinstance(raw, dict):
        raise InvalidPayload(field, "must be an object")
    status = _string(raw, "status", f"{field}.status")
    if status not in STATUSES:
        raise InvalidPayload(f"{field}.status", f"must be firing or resolved, got {status!r}")
    fingerprint = _string(raw, "fingerprint", f"{field}.fingerprint")
    if not _FINGERPRINT.fullmatch(fingerprint):
        raise InvalidPayload(f"{field}.fingerprint", f"must be 16 hex digits, got {fingerprint!r}")
    if "labels" not in raw:
        raise InvalidPayload(f"{field}.labels", "is required")
    labels = _string_map(raw["labels"], f"{field}.labels")
    if not labels.get("alertname"):
        raise InvalidPayload(f"{field}.labels.alertname", "is required")
    annotations = _string_map(raw.get("annotations", {}), f"{field}.annotations")
    if "startsAt" not in raw:
        raise InvalidPayload(f"{field}.startsAt", "is required")
    starts_at = parse_time(raw["startsAt"], f"{field}.startsAt")
    if starts_at is None:
        raise InvalidPayload(f"{field}.startsAt", "must be set (not the zero time)")
    ends_at = parse_time(raw.get("endsAt", _ZERO_TIME), f"{field}.endsAt")
    if status == "resolved" and ends_at is None:
        raise InvalidPayload(f"{field}.endsAt", "a resolved alert needs its end time")
    return ReceivedAlert(
        fingerprint=fingerprint,
        status=status,
        starts_at=starts_at,
        ends_at=ends_at if status == "resolved" else None,
        labels=labels,
        annotations=annotations,
        generator_url=_string(raw, "generatorURL", f"{field}.generatorURL", required=False),
    )


def _alert_fast(raw: object) -> ReceivedAlert | None:
    """The common case of `_alert` without building error paths: None when anything is off.

    It accepts a subset of what `_alert` accepts and returns the same alert for it (property-
    tested); whatever it declines goes through `_alert`, which names the problem.
    """
    if type(raw) is not dict:
        return None
    status = raw.get("status")
    fingerprint = raw.get("fingerprint")
    labels = raw.get("labels")
    annotations = raw.get("annotations", {})
    generator_url = raw.get("generatorURL", "")
    starts = raw.get("startsAt")
    ends = raw.get("endsAt", _ZERO_TIME)
    if (
        (status != "firing" and status != "resolved")
        or type(fingerprint) is not str
        or type(labels) is not dict
        or type(annotations) is not dict
        or type(generator_url) is not str
        or type(starts) is not str
        or type(ends) is not str
        or not labels.get("alertname")
        or not _FINGERPRINT.fullmatch(fingerprint)
    ):
        return None
    for value in labels.values():
        if type(value) is not str:
            return None
    for value in annotations.values():
        if type(value) is not str:
            return None
    try:
        starts_at = _parse_time_cached(starts)
        ends_at = _parse_time_cached(ends)
    except ValueError:
        return None
    if starts_at is None or (status == "resolved" and ends_at is None):
        return None
    return ReceivedAlert(
        fingerprint,
        status,
        starts_at,
        ends_at if status == "resolved" else None,
        labels,
        annotations,
        generator_url,
    )


def parse_notification(payload: object) -> Notification:
    """Validate a decoded webhook body; raises InvalidPayload naming the field."""
    if not isinstance(payload, dict):
        raise InvalidPayload("body", "must be a JSON object")
    version = payload.get("version")
    if version != "4":
        raise InvalidPayload("version", f'must be "4", got {version!r}')
    status = _string(payload, "status", "status")
    if status not in STATUSES:
        raise InvalidPayload("status", f"must be firing or resolved, got {status!r}")
    alerts_raw = payload.get("alerts")
    if not isinstance(alerts_raw, list):
        raise InvalidPayload("alerts", "must be a list")
    truncated = payload.get("truncatedAlerts", 0)
    if isinstance(truncated, bool) or not isinstance(truncated, int) or truncated < 0:
        raise InvalidPayload(
            "truncatedAlerts", f"must be a non-negative integer, got {truncated!r}"
        )
    return Notification(
        receiver=_string(payload, "receiver", "receiver", required=False),
        status=status,
        group_key=_string(payload, "groupKey", "groupKey", required=False),
        truncated_alerts=truncated,
        alerts=tuple(_alert_fast(a) or _alert(a, f"alerts[{i}]") for i, a in enumerate(alerts_raw)),
    )
