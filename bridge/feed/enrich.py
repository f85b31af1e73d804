"""The enrichment map applied on the feed of changes: each new (or reopened) episode, however
it arrived (webhook, reconciler, embedded evaluator), gets the fields of the entries its labels
match, moments after it is stored, in a field of its own (bridge.core.enrichment). At least
once, and idempotent: a replayed event sets the same fields."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from bridge.core.enrichment import EnrichRule, fields_for
from bridge.store import Event
from bridge.store.interface import Reads, SystemChanges


class EnrichStore(Reads, SystemChanges, Protocol):
    """The alerts read, their enrichment written."""


#: The consumer name under which enrichment keeps its position in the store.
CONSUMER = "enrich"


def enricher(
    store: EnrichStore, rules: Sequence[EnrichRule]
) -> Callable[[Sequence[Event]], Awaitable[None]]:
    """The feed consumer's handler."""

    async def handle(events: Sequence[Event]) -> None:
        ids = list(dict.fromkeys(e.alert_id for e in events if e.kind in ("fired", "reopened")))
        if not ids:
            return
        values = {}
        for alert in await store.get_alerts(ids):
            fields = fields_for(rules, alert.labels)
            if fields and fields != alert.enrichment:
                values[alert.id] = fields
        await store.set_enrichment(values)

    return handle
