"""What of a notification is the bridge's own: escalation copies, channel tests, rate-limit
summaries routed back here by a hand-written route, and the heartbeat (the dead man's
switch). They are never stored as alerts; heartbeats are counted, for their arrival to be
recorded.

>>> own = {"alertname": "AlertbridgeHeartbeat", "alertbridge": "heartbeat"}
>>> from bridge.core.alerts import ReceivedAlert
>>> theirs = ReceivedAlert("0123456789abcdef", "firing", 0, None, {"alertname": "x"}, {}, "")
>>> split((theirs, ReceivedAlert("fedcba9876543210", "firing", 0, None, own, {}, "")))
Split(alerts=(ReceivedAlert(fingerprint='0123456789abcdef', ...), heartbeats=1, ignored=0)
"""

from __future__ import annotations

from typing import NamedTuple

from bridge.core.alerts import ReceivedAlert
from bridge.core.policies import is_heartbeat, is_internal


class Split(NamedTuple):
    """The alerts to store, the heartbeats among the rest, and the others of the bridge's
    own (ignored: escalation copies and the like)."""

    alerts: tuple[ReceivedAlert, ...]
    heartbeats: int
    ignored: int


def split(alerts: tuple[ReceivedAlert, ...]) -> Split:
    internal = [a for a in alerts if is_internal(a.labels)]
    if not internal:
        return Split(alerts, 0, 0)
    beats = sum(1 for a in internal if is_heartbeat(a.labels))
    kept = tuple(a for a in alerts if not is_internal(a.labels))
    return Split(kept, beats, len(internal) - beats)
