"""The vocabulary of alerts as they arrive: one received alert, a whole notification, the
limits an alert is held to, and the times they carry. Built by the parsers of what arrives
(bridge.ingest.webhook, and the reconciler from Alertmanager's API), read by everything after
them: the store's interface, escalation, the channels."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from bridge.core.errors import InvalidInput
from bridge.core.times import in_range, parse_rfc3339

#: An episode's start is known to the millisecond: Alertmanager's API truncates the
#: nanoseconds its webhook carries when it set startsAt itself (FACTS.md, real senders).
EPISODE_PRECISION_NS = 1_000_000


class InvalidPayload(InvalidInput):
    """The notification is not a valid version 4 payload; `field` is a JSON path."""


@dataclass(frozen=True, slots=True)
class AlertLimits:
    """What one stored alert may hold; sizes in characters (code points). An alert past one
    is stored clipped to it, and marked.

    Loki and Mimir cap label names at 1024 and values at 2048 by default, with 30 labels;
    these are looser so that no alert Prometheus sends in practice is clipped, yet tight
    enough that a page of listed alerts stays small (docs/operating/security.md).
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

    `starts_at` is the episode's start to the millisecond (EPISODE_PRECISION_NS), what
    identifies it with its fingerprint whichever way it was learnt; `starts_ns` the rest,
    below a millisecond, as the sender gave it (0 when it gave none). `clipped` names what was
    cut to the limits (JSON paths); `extra` holds what a Grafana alert carries besides.

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
    starts_ns: int = 0
    clipped: tuple[str, ...] = ()
    extra: Mapping[str, Any] | None = None

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

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
    sender: str = "alertmanager"  # or "grafana" (SENDERS)
