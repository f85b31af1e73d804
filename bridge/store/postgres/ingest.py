"""Ingestion on PostgreSQL: received alerts applied by the episode rules
(bridge.ingest.episodes) in a handful of set-based statements per transaction, whatever the
number of alerts, safely beside other replicas doing the same:

1. the stored episodes among the receipts are locked (FOR UPDATE, in key order);
2. the new ones are inserted (ON CONFLICT DO NOTHING, in key order): one that another replica
   inserted meanwhile conflicts, waits for that replica's COMMIT, and is then locked and
   treated as stored: one row per episode, whichever replica got there first; the label
   index of those inserted is written by the same statement (no round trip of its own);
3. each receipt, in arrival order, is applied in Python to the locked state by the same rules
   as SQLite's (`episodes.change`), and each touched row is written once with its final
   values; the events go in last, under the feed lock (schema.FEED_LOCK).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge.core.alerts import ReceivedAlert
from bridge.core.model import dumps_extra, dumps_list, dumps_map
from bridge.ingest.episodes import change, reopened_detail
from bridge.store.labelindex import NewSeries
from bridge.store.postgres.schema import FEED_LOCK, INDEX_LOCK
from bridge.store.records import IngestResult

#: The new episodes, and the label index of those inserted (bridge.store.labelindex) in the
#: same statement, keys computed by PostgreSQL as the migration does: their series new to the
#: store (one another replica is making waits for its COMMIT and is then that replica's), in
#: key order, and those series' label values and postings. A value another replica committed
#: after this statement's snapshot is neither inserted here nor seen: its postings come back
#: as rows (key, series_id) for _POSTINGS. The index lock is held from _LOCK on (retention
#: takes nothing this statement's snapshot still sees).
_INSERT = """
WITH inserted AS (
INSERT INTO alerts (fingerprint, starts_at, ends_at, status, alertname, severity, labels,
                    annotations, generator_url, source, first_received_at, last_received_at,
                    receive_count, updated_at, resolution, starts_ns, clipped, extra)
SELECT fp, st, en, status, name, sev, labels, ann, url, $10, rec, rec, 1, rec,
       CASE WHEN status = 'resolved'
            THEN CASE $10 WHEN 'local' THEN 'local' ELSE 'alertmanager' END END,
       ns, clipped, extra
FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::text[], $11::bigint[], $12::bigint[], $13::text[],
            $14::text[])
     AS r(fp, st, en, status, name, sev, labels, ann, url, rec, ns, clipped, extra)
ORDER BY fp, st
ON CONFLICT (fingerprint, starts_at) DO NOTHING
RETURNING id, fingerprint, starts_at, labels
), stored AS (
SELECT DISTINCT md5(length(fingerprint) || ':' || fingerprint || labels) AS key, fingerprint,
       labels
FROM inserted
), made AS (
INSERT INTO series (key, fingerprint) SELECT key, fingerprint FROM stored ORDER BY key
ON CONFLICT (key) DO NOTHING RETURNING key, id
), pairs AS (
SELECT made.id AS series_id, md5(length(j.key) || ':' || j.key || j.value) AS key,
       j.key AS name, j.value
FROM made JOIN stored ON stored.key = made.key
CROSS JOIN jsonb_each_text(stored.labels::jsonb) AS j
), added AS (
INSERT INTO label_values (key, name, value)
SELECT DISTINCT key, name, value FROM pairs ORDER BY key
ON CONFLICT (key) DO NOTHING RETURNING key, id
), posted AS (
INSERT INTO postings (value_id, series_id)
SELECT coalesce(added.id, v.id), pairs.series_id FROM pairs
LEFT JOIN added ON added.key = pairs.key
LEFT JOIN label_values AS v ON v.key = pairs.key
WHERE coalesce(added.id, v.id) IS NOT NULL
)
SELECT id, fingerprint, starts_at, NULL AS key, NULL::bigint AS series_id FROM inserted
UNION ALL
SELECT NULL, NULL, NULL, pairs.key, pairs.series_id FROM pairs
WHERE NOT EXISTS (SELECT FROM added WHERE added.key = pairs.key)
  AND NOT EXISTS (SELECT FROM label_values AS v WHERE v.key = pairs.key)
"""

#: The batch's stored episodes, locked one key after another in the order given (sorted:
#: replicas lock in one order, no deadlock). One index probe per key, whatever the table's
#: size: as a join, the planner hashed the whole table for a batch of 3,200 keys (40 ms at
#: 100,000 alerts, growing with the table) where the probes take 8 ms; the LIMIT keeps the
#: subquery a probe per key (the key is unique: at most one row). First the index lock, shared
#: (schema.INDEX_LOCK, to COMMIT), for _INSERT: the outer side of a left join, read whatever
#: the keys find (one row of NULLs when none is stored).
_LOCK = """
SELECT a.fingerprint, a.starts_at, a.id, a.status, a.ends_at, a.resolution
FROM (SELECT pg_advisory_xact_lock_shared($3)) AS locked
LEFT JOIN LATERAL (
  SELECT a.* FROM unnest($1::text[], $2::bigint[]) AS k(fp, st)
  CROSS JOIN LATERAL (
    SELECT * FROM alerts a WHERE a.fingerprint = k.fp AND a.starts_at = k.st LIMIT 1 FOR UPDATE
  ) a
) a ON true
"""

_UPDATE = """
UPDATE alerts a SET status = u.status, ends_at = u.ends_at, resolution = u.resolution,
       annotations = coalesce(u.ann, a.annotations), updated_at = coalesce(u.upd, a.updated_at),
       receive_count = a.receive_count + u.inc, last_received_at = u.last,
       extra = coalesce(u.extra, a.extra),
       starts_ns = CASE a.starts_ns WHEN 0 THEN u.ns ELSE a.starts_ns END
FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::bigint[],
            $7::bigint[], $8::bigint[], $9::text[], $10::bigint[])
     AS u(id, status, ends_at, resolution, ann, upd, inc, last, extra, ns)
WHERE a.id = u.id
"""

INSERT_EVENTS = """
INSERT INTO events (alert_id, at, kind, actor, detail)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[])
"""


class PgIngestJob:
    """Received alerts to apply at `received_at`; jobs of one source and actor run together
    in one transaction (group commit), each with its own IngestResult."""

    __slots__ = ("actor", "alerts", "annotations", "received_at", "source")

    def __init__(self, alerts: Sequence[ReceivedAlert], received_at: int, source: str,
                 actor: str | None) -> None:  # fmt: skip
        self.alerts = alerts
        self.received_at = received_at
        self.source = source
        self.actor = actor
        self.annotations = [(dumps_map(a.annotations), dumps_extra(a.extra)) for a in alerts]

    @property
    def merge_key(self) -> tuple[str, str | None]:
        return self.source, self.actor


State = list[Any]  # [id, status, ends_at, resolution]


@dataclass(slots=True)
class _Touched:
    state: State
    annotations: tuple[str, str] | None = None  # and the extra fields
    updated_at: int | None = None
    count: int = 0
    last: int = 0
    starts_ns: int = 0  # the most exact start received (below the millisecond)


def _final(source: str) -> str:
    return "local" if source == "local" else "alertmanager"


async def _lock(conn: Any, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], State]:
    keys = sorted(keys)
    rows = await conn.fetch(_LOCK, [k[0] for k in keys], [k[1] for k in keys], INDEX_LOCK)
    return {(r[0], r[1]): [r[2], r[3], r[4], r[5]] for r in rows if r[0] is not None}


async def apply(conn: Any, jobs: Sequence[PgIngestJob]) -> list[IngestResult]:
    """Run the jobs (one source and actor) in the caller's transaction, in order."""
    source, actor = jobs[0].source, jobs[0].actor
    results = [IngestResult() for _ in jobs]
    receipts = [(a, ann, job.received_at, outcome)
                for job, outcome in zip(jobs, results, strict=True)
                for a, ann in zip(job.alerts, job.annotations, strict=True)]  # fmt: skip
    keys = list(dict.fromkeys((a.fingerprint, a.starts_at) for a, _, _, _ in receipts))
    states = await _lock(conn, keys)
    first: dict[tuple[str, int], tuple[ReceivedAlert, tuple[str, str], int]] = {}
    for a, ann, received_at, _ in receipts:
        key = (a.fingerprint, a.starts_at)
        if key not in states and key not in first:
            first[key] = (a, ann, received_at)
    inserted: set[tuple[str, int]] = set()
    if first:
        new = list(first.values())
        labels = [dumps_map(a.labels) for a, _, _ in new]
        rows = await conn.fetch(
            _INSERT, [a.fingerprint for a, _, _ in new], [a.starts_at for a, _, _ in new],
            [a.ends_at for a, _, _ in new], [a.status for a, _, _ in new],
            [a.alertname for a, _, _ in new], [a.severity for a, _, _ in new],
            labels, [ann[0] for _, ann, _ in new],
            [a.generator_url for a, _, _ in new], source, [rec for _, _, rec in new],
            [a.starts_ns for a, _, _ in new], [dumps_list(a.clipped) for a, _, _ in new],
            [ann[1] for _, ann, _ in new],
        )  # fmt: skip
        unseen: list[tuple[str, int]] = []  # postings of values committed meanwhile
        for alert_id, fp, starts, key, series_id in rows:
            if alert_id is None:
                unseen.append((key, series_id))
                continue
            a = first[(fp, starts)][0]
            resolution = _final(source) if a.status == "resolved" else None
            states[(fp, starts)] = [alert_id, a.status, a.ends_at, resolution]
            inserted.add((fp, starts))
        if unseen:
            await conn.execute(_POSTINGS, [k for k, _ in unseen], [i for _, i in unseen])
        raced = [k for k in first if k not in inserted]  # another replica's, committed since
        if raced:
            states.update(await _lock(conn, raced))
    events: list[tuple[int, int, str, str, str]] = []
    touched: dict[int, _Touched] = {}
    who = source if actor is None else actor
    for a, ann, received_at, outcome in receipts:
        key = (a.fingerprint, a.starts_at)
        state = states[key]
        if key in inserted:  # its first receipt: the row as inserted
            inserted.discard(key)
            if a.status == "firing":
                events.append((state[0], received_at, "fired", who, ""))
                outcome.fired.append(state[0])
            else:
                events.append((state[0], received_at, "resolved", who, "first seen resolved"))
                outcome.resolved.append(state[0])
            continue
        alert_id, status, ends_at, resolution = state
        kind = change(a.status, a.ends_at, status, ends_at, resolution, source != "local")
        row = touched.get(alert_id) or touched.setdefault(alert_id, _Touched(state))
        row.count += 1
        row.last = received_at
        row.starts_ns = row.starts_ns or a.starts_ns
        if kind == "resolve":
            state[1:] = ["resolved", a.ends_at, _final(source)]
            row.annotations, row.updated_at = ann, received_at
            events.append((alert_id, received_at, "resolved", who, ""))
            outcome.resolved.append(alert_id)
        elif kind == "confirm":
            state[2:] = [a.ends_at, "alertmanager"]
            row.updated_at = received_at
            outcome.repeats += 1
        elif kind == "earlier_end":
            state[2] = a.ends_at
            outcome.repeats += 1
        elif kind == "still_firing":
            row.annotations = ann
            outcome.repeats += 1
        elif kind == "reopen":
            state[1:] = ["firing", None, None]
            row.annotations, row.updated_at = ann, received_at
            events.append((alert_id, received_at, "reopened", who, reopened_detail(resolution)))
            outcome.reopened.append(alert_id)
        else:
            outcome.repeats += 1
    if touched:
        rows_ = list(touched.items())
        await conn.execute(
            _UPDATE, [i for i, _ in rows_], [t.state[1] for _, t in rows_],
            [t.state[2] for _, t in rows_], [t.state[3] for _, t in rows_],
            [t.annotations and t.annotations[0] for _, t in rows_],
            [t.updated_at for _, t in rows_], [t.count for _, t in rows_],
            [t.last for _, t in rows_], [t.annotations and t.annotations[1] for _, t in rows_],
            [t.starts_ns for _, t in rows_],
        )  # fmt: skip
    await insert_events(conn, events)
    return results


async def index_series(conn: Any, series: NewSeries) -> None:
    """The label index of alerts a store copy loads (bridge.store.labelindex; ingestion's
    is written by _INSERT itself): their
    series, and for the series new to the store (those this transaction made: a replica that
    made one first holds it until COMMIT), their label values and postings, in key order. The
    shared index lock keeps retention from taking a series or value out under them."""
    keys = sorted(series.by_key)
    rows = await conn.fetch(_SERIES, keys, [series.by_key[k][0] for k in keys], INDEX_LOCK)
    if not rows:
        return
    values, postings = series.entries({r[0]: r[1] for r in rows})
    values.sort()
    await conn.execute(_VALUES, *(list(column) for column in zip(*values, strict=True)))
    await conn.execute(_POSTINGS, [p[0] for p in postings], [p[1] for p in postings])


#: The lock is taken before the first row is inserted (no row comes out of the join without
#: it), and held to COMMIT.
_SERIES = """
INSERT INTO series (key, fingerprint)
SELECT u.key, u.fingerprint FROM unnest($1::text[], $2::text[]) AS u(key, fingerprint)
CROSS JOIN (SELECT pg_advisory_xact_lock_shared($3)) AS locked
ON CONFLICT (key) DO NOTHING RETURNING key, id
"""
_VALUES = """
INSERT INTO label_values (key, name, value) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
ON CONFLICT (key) DO NOTHING
"""
_POSTINGS = """
INSERT INTO postings (value_id, series_id)
SELECT v.id, p.series_id FROM unnest($1::text[], $2::bigint[]) AS p(key, series_id)
JOIN label_values AS v ON v.key = p.key
"""


async def insert_events(conn: Any, events: Sequence[tuple[int, int, str, str, str]]) -> None:
    """Events, in order, under the feed lock (held to COMMIT: ids in commit order)."""
    if not events:
        return
    await conn.execute("SELECT pg_advisory_xact_lock($1)", FEED_LOCK)
    await conn.execute(INSERT_EVENTS, *(list(column) for column in zip(*events, strict=True)))
