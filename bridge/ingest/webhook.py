"""Parse Alertmanager webhook notifications (version 4) and Grafana's (its webhook contact
point's version 1, the same shape with more fields): one pure function, no app or I/O.

Only what is not a notification at all is refused (InvalidPayload). Whatever an Alertmanager
can send is taken: an alert over a size limit is clipped to it and says so (`clipped`), so
that its neighbours are never refused with it (Alertmanager would post the whole group again
every group_interval, forever); an alert without `alertname` is an alert too.

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
from typing import Any

from bridge.core.alerts import (
    DEFAULT_LIMITS,
    EPISODE_PRECISION_NS,
    AlertLimits,
    InvalidPayload,
    Notification,
    ReceivedAlert,
    parse_time,
)
from bridge.core.model import json_integer
from bridge.core.times import MAX_TIME_NS, MIN_TIME_NS, ZERO_TIME, parse_rfc3339
from bridge.ingest.episodes import local_fingerprint

_FINGERPRINT = re.compile(r"[0-9a-f]{16}", re.ASCII)
STATUSES = ("firing", "resolved")
#: Versions of the body by sender: Alertmanager's webhook, Grafana's webhook contact point.
SENDERS = {"4": "alertmanager", "1": "grafana"}
#: Grafana's per-alert fields kept beside the labels (strings; `values` a map of numbers).
GRAFANA_LINKS = ("dashboardURL", "panelURL", "silenceURL", "imageURL", "valueString")


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


def clip(
    labels: dict[str, str], annotations: dict[str, str], generator_url: str, limits: AlertLimits
) -> tuple[dict[str, str], dict[str, str], str, tuple[str, ...]]:
    """The alert cut to the limits, and what was cut (JSON paths below the alert; "labels" or
    "annotations" alone: some were left out, those past the count or with too long a name).

    A label keeps a prefix of its value, so that a silence can still match it (a regular
    expression on the prefix: bridge.alertmanager.client). Past the whole alert's limit the
    longest annotations are cut first, then the longest label values.

    >>> clip({"alertname": "x", "pod": "p" * 10}, {}, "", AlertLimits(max_label_value=4))
    ({'alertname': 'x', 'pod': 'pppp'}, {}, '', ('labels.pod',))
    """
    cut: list[str] = []
    if len(labels) > limits.max_labels or any(len(n) > limits.max_label_name for n in labels):
        # Left out, not cut: a silence matches a subset of an alert's labels, never a cut name.
        cut.append("labels")
        kept = sorted(((n, v) for n, v in labels.items() if len(n) <= limits.max_label_name),
                      key=lambda item: (item[0] != "alertname", item[0]))  # fmt: skip
        labels = dict(kept[: limits.max_labels])
    if len(annotations) > limits.max_annotations:
        cut.append("annotations")
        annotations = dict(sorted(annotations.items())[: limits.max_annotations])
    labels, annotations = dict(labels), dict(annotations)
    for name, value in labels.items():
        if len(value) > limits.max_label_value:
            labels[name] = value[: limits.max_label_value]
            cut.append(f"labels.{name}")
    for name, value in annotations.items():
        if len(value) > limits.max_annotation_value:
            annotations[name] = value[: limits.max_annotation_value]
            cut.append(f"annotations.{name}")
    if len(generator_url) > limits.max_generator_url:
        generator_url = generator_url[: limits.max_generator_url]
        cut.append("generatorURL")
    size = len(generator_url) + sum(len(n) + len(v) for n, v in labels.items())
    size += sum(len(n) + len(v) for n, v in annotations.items())
    for kind, fields in (("annotations", annotations), ("labels", labels)):
        # Longest first: each cut takes what is over from the longest value left.
        for name in sorted(fields, key=lambda n: -len(fields[n])):
            if size <= limits.max_alert_size:
                break
            value = fields[name]
            keep = max(0, len(value) - (size - limits.max_alert_size))
            fields[name] = value[:keep]
            size -= len(value) - keep
            if f"{kind}.{name}" not in cut:
                cut.append(f"{kind}.{name}")
    return labels, annotations, generator_url, tuple(cut)


def split_start(starts_at: int) -> tuple[int, int]:
    """(the episode's start to the millisecond, the nanoseconds below it).

    >>> split_start(1795428000894696746)
    (1795428000894000000, 696746)
    """
    rest = starts_at % EPISODE_PRECISION_NS
    return starts_at - rest, rest


def _grafana_extra(raw: Mapping[str, Any], limits: AlertLimits) -> dict[str, Any] | None:
    """What a Grafana alert carries besides Alertmanager's fields: its links, image and
    values; a field of another type than Grafana sends is left out (newer fields too)."""
    extra: dict[str, Any] = {}
    for key in GRAFANA_LINKS:
        value = raw.get(key)
        if isinstance(value, str) and value:
            extra[key] = value[: limits.max_generator_url]
    values = raw.get("values")
    if isinstance(values, dict):
        numbers = {str(k)[: limits.max_label_name]: v for k, v in values.items()
                   if isinstance(v, int | float) and not isinstance(v, bool)}  # fmt: skip
        if numbers:
            extra["values"] = dict(sorted(numbers.items())[: limits.max_annotations])
    return extra or None


def _alert(
    raw: object, field: str, limits: AlertLimits = DEFAULT_LIMITS, sender: str = "alertmanager"
) -> ReceivedAlert:
    if not isinstance(raw, dict):
        raise InvalidPayload(field, "must be an object")
    status = _string(raw, "status", f"{field}.status")
    if status not in STATUSES:
        raise InvalidPayload(f"{field}.status", f"must be firing or resolved, got {status!r}")
    if "labels" not in raw:
        raise InvalidPayload(f"{field}.labels", "is required")
    labels = _string_map(raw["labels"], f"{field}.labels")
    if not labels:  # Alertmanager refuses such alerts: no sender has one
        raise InvalidPayload(f"{field}.labels", "must hold at least one label")
    if sender == "grafana" and "fingerprint" not in raw:  # Grafana before 8.x sent none
        fingerprint = local_fingerprint(labels)
    else:
        fingerprint = _string(raw, "fingerprint", f"{field}.fingerprint")
    if not _FINGERPRINT.fullmatch(fingerprint):
        raise InvalidPayload(
            f"{field}.fingerprint", f"must be 16 hex digits, got {fingerprint[:64]!r}"
        )
    annotations = _string_map(raw.get("annotations") or {}, f"{field}.annotations")
    generator_url = _string(raw, "generatorURL", f"{field}.generatorURL", required=False)
    labels, annotations, generator_url, clipped = clip(labels, annotations, generator_url, limits)
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
    episode_start, starts_ns = split_start(starts_at)
    return ReceivedAlert(
        fingerprint=fingerprint,
        status=status,
        starts_at=episode_start,
        ends_at=ends_at,
        labels=labels,
        annotations=annotations,
        generator_url=generator_url,
        starts_ns=starts_ns,
        clipped=clipped,
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
    """The common case of `_alert` without building error paths: None when anything is off
    (an alert to clip included).

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
        or not labels
        or type(annotations) is not dict
        or type(generator_url) is not str
        or type(starts) is not str
        or type(ends) is not str
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
    rest = starts_at % EPISODE_PRECISION_NS
    return ReceivedAlert(
        fingerprint, status, starts_at - rest, ends_at, labels, annotations, generator_url, rest
    )


def parse_notification(
    payload: object, limits: AlertLimits = DEFAULT_LIMITS, body_size: int | None = None
) -> Notification:
    """Validate a decoded webhook body; raises InvalidPayload naming the field.

    `body_size`: the encoded body's length, when known; a body shorter than every size limit
    cannot hold a string that passes one (a JSON string is never shorter than its text).
    Fields this version does not know (a newer sender's) are ignored.
    """
    if not isinstance(payload, dict):
        raise InvalidPayload("body", "must be a JSON object")
    version = payload.get("version")
    sender = SENDERS.get(version) if isinstance(version, str) else None
    if sender is None:
        raise InvalidPayload(
            "version", f'must be "4" (Alertmanager) or "1" (Grafana), got {version!r:.64}'
        )
    status = _string(payload, "status", "status")
    if status not in STATUSES:
        raise InvalidPayload("status", f"must be firing or resolved, got {status!r:.64}")
    alerts_raw = payload.get("alerts")
    if not isinstance(alerts_raw, list):
        raise InvalidPayload("alerts", "must be a list")
    raw_truncated = payload.get("truncatedAlerts", 0)
    truncated = json_integer(raw_truncated)
    if truncated is None or truncated < 0:
        raise InvalidPayload(
            "truncatedAlerts", f"must be a non-negative integer, got {raw_truncated!r:.64}"
        )
    sized = body_size is None or body_size > limits.smallest_size
    if sender == "grafana":
        alerts = tuple(_grafana_alert(a, f"alerts[{i}]", limits) for i, a in enumerate(alerts_raw))
    else:
        alerts = tuple(
            _alert_fast(a, limits, sized) or _alert(a, f"alerts[{i}]", limits)
            for i, a in enumerate(alerts_raw)
        )
    return Notification(
        receiver=_string(payload, "receiver", "receiver", required=False),
        status=status,
        group_key=_string(payload, "groupKey", "groupKey", required=False),
        truncated_alerts=truncated,
        alerts=alerts,
        sender=sender,
    )


def _grafana_alert(raw: object, field: str, limits: AlertLimits) -> ReceivedAlert:
    alert = _alert(raw, field, limits, "grafana")  # raw is an object: _alert checked it
    extra = _grafana_extra(raw, limits) if isinstance(raw, dict) else None
    return alert._replace(extra=extra) if extra else alert


def is_grafana_test(notification: Notification) -> bool:
    """Grafana's "test" button of a contact point: one made-up alert (alertname TestAlert,
    instance Grafana) that no rule raised and nothing will ever resolve."""
    return (
        notification.sender == "grafana"
        and bool(notification.alerts)
        and all(
            a.labels.get("alertname") == "TestAlert" and a.labels.get("instance") == "Grafana"
            for a in notification.alerts
        )
    )


def alert_from_api(item: Mapping[str, Any], limits: AlertLimits = DEFAULT_LIMITS) -> ReceivedAlert:
    """An alert as `GET /api/v2/alerts` lists it, as the webhook would deliver it firing: the
    same rules (clipping, the episode's start), so that both ways find one episode. Raises
    InvalidPayload for an item that is not an alert."""
    raw = {"status": "firing", "endsAt": ZERO_TIME,
           **{k: item.get(k) for k in ("fingerprint", "labels", "startsAt") if k in item},
           "annotations": item.get("annotations") or {},
           "generatorURL": item.get("generatorURL") or ""}  # fmt: skip
    return _alert_fast(raw, limits) or _alert(raw, "alert", limits)
