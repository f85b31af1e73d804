"""Parse Alertmanager webhook notifications (version 4): one pure function, no app or I/O.

>>> n = parse_notification({"version": "4", "status": "firing", "receiver": "alertbridge",
...     "groupKey": "{}:{}", "alerts": [{"status": "firing", "fingerprint": "a1b2c3d4e5f60718",
...     "startsAt": "2026-11-23T10:00:00.5Z", "endsAt": "0001-01-01T00:00:00Z",
...     "labels": {"alertname": "high_cpu"}, "annotations": {}, "generatorURL": ""}]})
>>> n.alerts[0].starts_at
1795428000500000000
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from bridge.core.errors import InvalidInput, TooLarge
from bridge.core.times import MAX_TIME_NS, MIN_TIME_NS, ZERO_TIME, in_range, parse_rfc3339

_FINGERPRINT = re.compile(r"[0-9a-f]{16}", re.ASCII)
STATUSES = ("firing", "resolved")


class InvalidPayload(InvalidInput):
    """The notification is not a valid version 4 payload; `field` is a JSON path."""


class AlertTooLarge(InvalidPayload, TooLarge):
    """An alert exceeds a size limit; `field` is a JSON path."""


@dataclass(frozen=True, slots=True)
class AlertLimits:
    """What one stored alert may hold; sizes in characters (code points).

    Loki and Mimir cap label names at 1024 and values at 2048 by default, with 30 labels;
    these are looser so that no alert Prometheus sends in practice is refused, yet tight
    enough that a page of listed alerts stays small (README, "Limits").
    """

    max_labels: int = 64
    max_label_name: int = 1024
    max_label_value: int = 4096
    max_annotations: int = 64
    max_annotation_value: int = 65536
    max_generator_url: int = 4096
    max_alert_size: int = 262144  # labels, annotations and generator URL together
    #: The smallest size limit: no string of a body this long can pass any of them.
    smallest_size: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        smallest = min(self.max_label_name, self.max_label_value, self.max_annotation_value,
                       self.max_generator_url, self.max_alert_size)  # fmt: skip
        object.__setattr__(self, "smallest_size", smallest)


DEFAULT_LIMITS = AlertLimits()


def parse_time(value: object, field: str) -> int | None:
    """RFC 3339 with up to nanosecond fractions -> integer ns since the epoch (None for zero).

    Offsets up to +-23:59; the instant must lie in TIME_RANGE (what the store holds).
    """
    if not isinstance(value, str):
        raise InvalidPayload(field, f"must be an RFC 3339 timestamp string, got {value!r}")
    try:
        return in_range(parse_rfc3339(value), value)
    except ValueError as exc:
        raise InvalidPayload(field, str(exc)) from None


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


def _check_sizes(
    labels: dict[str, str],
    annotations: dict[str, str],
    generator_url: str,
    field: str,
    limits: AlertLimits,
) -> None:
    """Raise naming the first limit the alert exceeds (AlertTooLarge for sizes)."""
    if len(labels) > limits.max_labels:
        raise InvalidPayload(
            f"{field}.labels", f"has {len(labels)} labels, at most {limits.max_labels}"
        )
    if len(annotations) > limits.max_annotations:
        raise InvalidPayload(
            f"{field}.annotations",
            f"has {len(annotations)} annotations, at most {limits.max_annotations}",
        )
    total = len(generator_url)
    for name, value in labels.items():
        if len(name) > limits.max_label_name:
            raise AlertTooLarge(
                f"{field}.labels",
                f"a label name of {len(name)} characters, at most {limits.max_label_name}",
            )
        if len(value) > limits.max_label_value:
            raise AlertTooLarge(
                f"{field}.labels.{name}",
                f"{len(value)} characters, at most {limits.max_label_value}",
            )
        total += len(name) + len(value)
    for name, value in annotations.items():
        if len(value) > limits.max_annotation_value:
            raise AlertTooLarge(
                f"{field}.annotations.{name[:64]}",
                f"{len(value)} characters, at most {limits.max_annotation_value}",
            )
        total += len(name) + len(value)
    if len(generator_url) > limits.max_generator_url:
        raise AlertTooLarge(
            f"{field}.generatorURL",
            f"{len(generator_url)} characters, at most {limits.max_generator_url}",
        )
    if total > limits.max_alert_size:
        raise AlertTooLarge(
            field,
            f"{total} characters of labels, annotations and URL, at most {limits.max_alert_size}",
        )


def _alert(raw: object, field: str, limits: AlertLimits = DEFAULT_LIMITS) -> ReceivedAlert:
    if not isinstance(raw, dict):
        raise InvalidPayload(field, "must be an object")
    status = _string(raw, "status", f"{field}.status")
    if status not in STATUSES:
        raise InvalidPayload(f"{field}.status", f"must be firing or resolved, got {status!r}")
    fingerprint = _string(raw, "fingerprint", f"{field}.fingerprint")
    if not _FINGERPRINT.fullmatch(fingerprint):
        raise InvalidPayload(
            f"{field}.fingerprint", f"must be 16 hex digits, got {fingerprint[:64]!r}"
        )
    if "labels" not in raw:
        raise InvalidPayload(f"{field}.labels", "is required")
    labels = _string_map(raw["labels"], f"{field}.labels")
    if not labels.get("alertname"):
        raise InvalidPayload(f"{field}.labels.alertname", "is required")
    annotations = _string_map(raw.get("annotations", {}), f"{field}.annotations")
    generator_url = _string(raw, "generatorURL", f"{field}.generatorURL", required=False)
    _check_sizes(labels, annotations, generator_url, field, limits)
    if "startsAt" not in raw:
        raise InvalidPayload(f"{field}.startsAt", "is required")
    starts_at = parse_time(raw["startsAt"], f"{field}.startsAt")
    if starts_at is None:
        raise InvalidPayload(f"{field}.startsAt", "must be set (not the zero time)")
    ends_raw = raw.get("endsAt", ZERO_TIME)
    if status == "resolved":
        ends_at = parse_time(ends_raw, f"{field}.endsAt")
        if ends_at is None:
            raise InvalidPayload(f"{field}.endsAt", "a resolved alert needs its end time")
    else:  # a firing alert's end is not used: only its syntax must be right
        ends_at = None
        if not isinstance(ends_raw, str):
            raise InvalidPayload(f"{field}.endsAt", "must be an RFC 3339 timestamp string")
        try:
            parse_rfc3339(ends_raw)
        except ValueError as exc:
            raise InvalidPayload(f"{field}.endsAt", str(exc)) from None
    return ReceivedAlert(
        fingerprint=fingerprint,
        status=status,
        starts_at=starts_at,
        ends_at=ends_at,
        labels=labels,
        annotations=annotations,
        generator_url=generator_url,
    )


def _oversized(
    labels: dict[str, str], annotations: dict[str, str], url: str, limits: AlertLimits
) -> bool:
    """Whether a size limit is passed; sums in C loops, and a value is looked at on its own
    only when the sum of its kind passes that kind's limit."""
    names, values = sum(map(len, labels)), sum(map(len, labels.values()))
    notes = sum(map(len, annotations)) + sum(map(len, annotations.values()))
    return (
        names + values + notes + len(url) > limits.max_alert_size
        or (names > limits.max_label_name and max(map(len, labels)) > limits.max_label_name)
        or (values > limits.max_label_value
            and max(map(len, labels.values())) > limits.max_label_value)
        or (notes > limits.max_annotation_value
            and max(map(len, annotations.values())) > limits.max_annotation_value)
    )  # fmt: skip


def _alert_fast(
    raw: object, limits: AlertLimits = DEFAULT_LIMITS, sized: bool = True
) -> ReceivedAlert | None:
    """The common case of `_alert` without building error paths: None when anything is off.

    It accepts a subset of what `_alert` accepts and returns the same alert for it (property-
    tested); whatever it declines goes through `_alert`, which names the problem. `sized`
    False: the caller knows no string can pass a size limit (the body is shorter than all).
    """
    if type(raw) is not dict:
        return None
    status = raw.get("status")
    fingerprint = raw.get("fingerprint")
    labels = raw.get("labels")
    annotations = raw.get("annotations", {})
    generator_url = raw.get("generatorURL", "")
    starts = raw.get("startsAt")
    ends = raw.get("endsAt", ZERO_TIME)
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
        or len(labels) > limits.max_labels
        or len(annotations) > limits.max_annotations
        or len(generator_url) > limits.max_generator_url
    ):
        return None
    for value in labels.values():
        if type(value) is not str:
            return None
    for value in annotations.values():
        if type(value) is not str:
            return None
    if sized and _oversized(labels, annotations, generator_url, limits):
        return None
    try:
        starts_at = parse_rfc3339(starts)
        ends_at = parse_rfc3339(ends)
    except ValueError:
        return None
    if starts_at is None or not MIN_TIME_NS <= starts_at <= MAX_TIME_NS:
        return None
    if status == "resolved":
        if ends_at is None or not MIN_TIME_NS <= ends_at <= MAX_TIME_NS:
            return None
    else:
        ends_at = None
    return ReceivedAlert(
        fingerprint, status, starts_at, ends_at, labels, annotations, generator_url
    )


def parse_notification(
    payload: object, limits: AlertLimits = DEFAULT_LIMITS, body_size: int | None = None
) -> Notification:
    """Validate a decoded webhook body; raises InvalidPayload naming the field.

    `body_size`: the encoded body's length, when known; a body shorter than every size limit
    cannot hold a string that passes one (a JSON string is never shorter than its text).
    """
    if not isinstance(payload, dict):
        raise InvalidPayload("body", "must be a JSON object")
    version = payload.get("version")
    if version != "4":
        raise InvalidPayload("version", f'must be "4", got {version!r:.64}')
    status = _string(payload, "status", "status")
    if status not in STATUSES:
        raise InvalidPayload("status", f"must be firing or resolved, got {status!r:.64}")
    alerts_raw = payload.get("alerts")
    if not isinstance(alerts_raw, list):
        raise InvalidPayload("alerts", "must be a list")
    truncated = payload.get("truncatedAlerts", 0)
    if isinstance(truncated, bool) or not isinstance(truncated, int) or truncated < 0:
        raise InvalidPayload(
            "truncatedAlerts", f"must be a non-negative integer, got {truncated!r:.64}"
        )
    sized = body_size is None or body_size > limits.smallest_size
    return Notification(
        receiver=_string(payload, "receiver", "receiver", required=False),
        status=status,
        group_key=_string(payload, "groupKey", "groupKey", required=False),
        truncated_alerts=truncated,
        alerts=tuple(
            _alert_fast(a, limits, sized) or _alert(a, f"alerts[{i}]", limits)
            for i, a in enumerate(alerts_raw)
        ),
    )
