"""Ingesting received alerts into episodes by Alertmanager's delivery rules (FACTS.md, HA).

- an episode is (fingerprint, startsAt); an exact repeat only bumps receive_count;
- a "firing" never re-opens an episode Alertmanager resolved (a real re-fire has a new
  startsAt): HA replicas deliver stale firings after the resolved;
- a "resolved" touches only its own startsAt's episode; the earliest endsAt wins;
so the final state of deliveries does not depend on their arrival order. Resolutions the
bridge made itself (inferred by the reconciler, or by an operator's hand) are provisional:
a later "firing" of the same episode from Alertmanager reopens it, with an event saying why,
and a "resolved" from Alertmanager makes them final.

`change` is the decision for a receipt of a stored episode; a store applies it (the SQLite
one in bridge.store.sqlite.ingest).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from bridge.core.model import dumps_map

#: Resolutions the bridge made itself, undone by a later firing from Alertmanager.
PROVISIONAL = ("inferred", "manual")
#: What a receipt of a stored episode does (see `change`).
CHANGES = ("resolve", "earlier_end", "confirm", "still_firing", "reopen", "repeat")


def local_fingerprint(labels: Mapping[str, str]) -> str:
    """16 hex digits identifying a label set, for alerts the embedded evaluator raises."""
    return hashlib.sha256(dumps_map(labels).encode()).hexdigest()[:16]


def change(
    received: str,
    received_ends_at: int | None,
    status: str,
    ends_at: int | None,
    resolution: str | None,
    from_alertmanager: bool,
) -> str:
    """What a receipt (`received` status and endsAt) does to a stored episode (its status,
    ends_at, resolution), by the delivery rules:

    - resolve: a "resolved" of a firing episode;
    - confirm: Alertmanager says resolved what the bridge had resolved (provisional becomes
      final, with Alertmanager's end);
    - earlier_end: two replicas saw the end at different times: the earliest wins;
    - still_firing: a "firing" of a firing episode (the annotations carry the new $value);
    - reopen: Alertmanager has firing what the bridge resolved itself;
    - repeat: an exact repeat, or a stale "firing" of a resolved episode: nothing changes
      but the receive count.

    >>> change("firing", None, "resolved", 5, "alertmanager", True)
    'repeat'
    >>> change("firing", None, "resolved", 5, "inferred", True)
    'reopen'
    """
    if received == "resolved":
        if status == "firing":
            return "resolve"
        if resolution in PROVISIONAL and from_alertmanager:
            return "confirm"
        if received_ends_at is not None and ends_at is not None and received_ends_at < ends_at:
            return "earlier_end"
    elif status == "firing":
        return "still_firing"
    elif resolution in PROVISIONAL and from_alertmanager:
        return "reopen"
    return "repeat"


def reopened_detail(resolution: str | None) -> str:
    """The text of the "reopened" event of an episode the bridge had resolved."""
    how = "by the reconciler" if resolution == "inferred" else "by hand"
    return f"Alertmanager has it firing again after it was resolved {how}"
