"""Ingestion on SQLite: received alerts applied by the episode rules (bridge.ingest.episodes)
in as few statements as a batch allows. New episodes of a notification are inserted up to
INSERT_ROWS a statement after one lookup; known ones with one executemany per kind of change.
New rows are added to alert_counts here (the UPDATE and DELETE triggers keep the rest).
"""

from __future__ import annotations

import functools
import itertools
import sqlite3
from collections import Counter
from collections.abc import Sequence
from typing import Any, Final

import orjson

from bridge.core.alerts import ReceivedAlert
from bridge.core.model import dumps_extra, dumps_list, dumps_map
from bridge.ingest.episodes import change, reopened_detail
from bridge.store.labelindex import NewSeries
from bridge.store.records import IngestResult

_INSERT_INTO = (
    "INSERT INTO alerts (fingerprint, starts_at, ends_at, status, alertname, severity, labels,"
    " annotations, generator_url, source, first_received_at, last_received_at, receive_count,"
    " updated_at, resolution, starts_ns, clipped, extra) VALUES "
)


#: SQL: the final resolution a "resolved" receipt gives, by its source ({} the source).
_FINAL = "CASE {} WHEN 'local' THEN 'local' ELSE 'alertmanager' END"


def _values(first: int) -> str:
    """One row's VALUES for a Row bound from parameter ?first on (received_at stored thrice;
    a new resolved episode's resolution made by SQLite from its status and source)."""
    numbers = [f"?{first + i}" for i in range(ROW_PARAMETERS)]
    resolution = f"CASE {numbers[3]} WHEN 'resolved' THEN {_FINAL.format(numbers[9])} END"
    return (f"({', '.join(numbers[:11])}, {numbers[10]}, 1, {numbers[10]}, {resolution},"
            f" {', '.join(numbers[11:])})")  # fmt: skip


#: The parameters of a Row (_row).
ROW_PARAMETERS: Final = 14
_INSERT = _INSERT_INTO + _values(1)
_INSERT_OR_SKIP = _INSERT + " ON CONFLICT (fingerprint, starts_at) DO NOTHING RETURNING id"
#: The most rows one INSERT of _insert_new writes (a power of two; 14 parameters a row).
INSERT_ROWS = 64


@functools.lru_cache(maxsize=INSERT_ROWS.bit_length())
def _insert_rows(count: int) -> str:
    """_INSERT for `count` rows (a power of two, so that a handful of statements are cached)."""
    return _INSERT_INTO + ", ".join(_values(1 + ROW_PARAMETERS * row) for row in range(count))


#: Up to this many alerts a notification is applied row by row (fewer statements than a batch).
SMALL_BATCH = 2

Row = tuple[str, int, int | None, str, str, str, str, str, str, str, int, int, str, str]
#: Where Row holds what the updates and events need (a plain tuple: it is built per alert on
#: the event loop, and bound to the INSERT as it is).
_LABELS: Final = 6
_ANNOTATIONS: Final = 7
_SOURCE: Final = 9
_RECEIVED_AT: Final = 10
_EXTRA: Final = 13
Event = tuple[int, int, str, str, str]
State = tuple[int, str, int | None, str | None]  # id, status, ends_at, resolution


def _row(a: ReceivedAlert, received_at: int, source: str) -> Row:
    return (a.fingerprint, a.starts_at, a.ends_at, a.status, a.alertname, a.severity,
            dumps_map(a.labels), dumps_map(a.annotations), a.generator_url, source,
            received_at, a.starts_ns, dumps_list(a.clipped), dumps_extra(a.extra))  # fmt: skip


def _record_new(
    alert_id: int,
    a: ReceivedAlert,
    row: Row,
    source: str,
    events: list[Event],
    result: IngestResult,
) -> None:
    if a.status == "firing":
        events.append((alert_id, row[_RECEIVED_AT], "fired", source, ""))
        result.fired.append(alert_id)
    else:
        events.append((alert_id, row[_RECEIVED_AT], "resolved", source, "first seen resolved"))
        result.resolved.append(alert_id)


_COUNT = (
    "INSERT INTO alert_counts (state, severity, count) VALUES (?, ?, ?)"
    " ON CONFLICT (state, severity) DO UPDATE SET count = count + excluded.count"
)


def _count_new(conn: sqlite3.Connection, new: Sequence[ReceivedAlert]) -> None:
    """Add new episodes to alert_counts: one upsert per state and severity (migration 4)."""
    counts = Counter(("resolved" if a.status == "resolved" else "firing", a.severity) for a in new)
    conn.executemany(_COUNT, [(state, severity, n) for (state, severity), n in counts.items()])


def _stored(conn: sqlite3.Connection, keys: str) -> dict[tuple[str, int], State]:
    """The stored state of the notification's episodes that exist: one statement for the lot."""
    rows = conn.execute(
        "SELECT a.fingerprint, a.starts_at, a.id, a.status, a.ends_at, a.resolution"
        " FROM json_each(?) AS j"
        " JOIN alerts AS a ON a.fingerprint = j.value ->> 0 AND a.starts_at = j.value ->> 1",
        (keys,),
    )
    return {(fp, starts): (alert_id, status, ends_at, resolution)
            for fp, starts, alert_id, status, ends_at, resolution in rows}  # fmt: skip


def _insert_new(conn: sqlite3.Connection, new: list[ReceivedAlert], rows: list[Row]) -> list[int]:
    """Insert episodes known to be new, up to INSERT_ROWS a statement; returns their ids in order.

    Not executemany: the sqlite3 module lets go of the GIL around each row's step and must take
    it back from the event loop thread after every row, which, while the loop is busy parsing,
    can take a millisecond or more (a convoy). With multi-row statements the writer takes it
    back once per statement for the same SQLite work (bench/insert.py prints both ways, alone
    and beside a busy Python thread).
    """
    position = 0
    while position < len(rows):
        count = 1 << (min(INSERT_ROWS, len(rows) - position).bit_length() - 1)
        chunk = rows[position : position + count]
        conn.execute(_insert_rows(count), list(itertools.chain.from_iterable(chunk)))
        position += count
    last: int = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
    first = last - len(new) + 1
    # SQLite gives each new row max(rowid) + 1, so the rows inserted one after another in this
    # transaction are consecutive; check the first, and fall back to looking every id up if
    # that ever did not hold.
    row = conn.execute("SELECT fingerprint, starts_at FROM alerts WHERE id = ?", (first,))
    if row.fetchone() == (new[0].fingerprint, new[0].starts_at):
        return list(range(first, last + 1))
    return [_state(conn, a)[0] for a in new]


def _state(conn: sqlite3.Connection, a: ReceivedAlert) -> State:
    state: State = conn.execute(
        "SELECT id, status, ends_at, resolution FROM alerts"
        " WHERE fingerprint = ? AND starts_at = ?",
        (a.fingerprint, a.starts_at),
    ).fetchone()
    return state


#: The updates of a known episode by the HA rules, by kind (see _change). A resolved row's
#: annotations change only in a statement that sets its status too (resolve, reopen): the
#: free-text index's trigger runs OF status (schema migration 14); still_firing changes a
#: firing row's, which is not in that index.
_UPDATES = {
    "resolve": "UPDATE alerts SET status = 'resolved', ends_at = ?, annotations = ?, extra = ?,"  # noqa: S608 - constants
    f" resolution = {_FINAL.format('?')}, receive_count = receive_count + 1,"
    " last_received_at = ?, updated_at = ? WHERE id = ?",
    # Two replicas saw the end at slightly different times: keep the earliest.
    "earlier_end": "UPDATE alerts SET ends_at = ?, receive_count = receive_count + 1,"
    " last_received_at = ? WHERE id = ?",
    # Alertmanager says resolved what the bridge had resolved: final, with Alertmanager's end
    # (the bridge's was when it noticed, or when the operator clicked).
    "confirm": "UPDATE alerts SET resolution = 'alertmanager', ends_at = ?,"
    " receive_count = receive_count + 1, last_received_at = ?, updated_at = ? WHERE id = ?",
    # Still firing: the annotations carry the current $value.
    "still_firing": "UPDATE alerts SET annotations = ?, extra = ?,"
    " receive_count = receive_count + 1, last_received_at = ? WHERE id = ?",
    # Alertmanager still has it firing: the bridge's resolution was wrong.
    "reopen": "UPDATE alerts SET status = 'firing', ends_at = NULL, resolution = NULL,"
    " annotations = ?, extra = ?, receive_count = receive_count + 1, last_received_at = ?,"
    " updated_at = ? WHERE id = ?",
    # An exact repeat, or a stale firing of a resolved episode.
    "repeat": "UPDATE alerts SET receive_count = receive_count + 1, last_received_at = ?"
    " WHERE id = ?",
}


def _change(a: ReceivedAlert, row: Row, state: State) -> tuple[str, tuple[Any, ...]]:
    """Which update a receipt of a stored episode makes (episodes.change), and its
    parameters."""
    alert_id, status, ends_at, resolution = state
    annotations, source, received_at = row[_ANNOTATIONS], row[_SOURCE], row[_RECEIVED_AT]
    extra = row[_EXTRA]
    kind = change(a.status, a.ends_at, status, ends_at, resolution, source != "local")
    params: tuple[Any, ...]
    if kind == "resolve":
        params = (a.ends_at, annotations, extra, source, received_at, received_at, alert_id)
    elif kind == "confirm":
        params = (a.ends_at, received_at, received_at, alert_id)
    elif kind == "earlier_end":
        params = (a.ends_at, received_at, alert_id)
    elif kind == "still_firing":
        params = (annotations, extra, received_at, alert_id)
    elif kind == "reopen":
        params = (annotations, extra, received_at, received_at, alert_id)
    else:
        params = (received_at, alert_id)
    return kind, params


Known = tuple[ReceivedAlert, Row, State | None, IngestResult]


def _apply_known(
    conn: sqlite3.Connection, known: list[Known], source: str, events: list[Event]
) -> None:
    """Apply receipts of stored episodes, counting into each receipt's outcome.

    Those whose state was read beforehand are applied with one executemany per kind of
    change; the others (a later receipt of an episode already received in the same run) one
    by one, after, so that each sees what the one before it did.
    """
    batched: dict[str, list[tuple[Any, ...]]] = {}
    later: list[Known] = []
    exact: list[tuple[int, int]] = []
    for item in known:
        a, row, state, outcome = item
        if state is None:
            later.append(item)
            continue
        kind, params = _change(a, row, state)
        batched.setdefault(kind, []).append(params)
        _account(kind, state, row, source, events, outcome)
        if a.starts_ns:
            exact.append((a.starts_ns, state[0]))
    for kind, params_list in batched.items():
        conn.executemany(_UPDATES[kind], params_list)
    for a, row, _, outcome in later:
        state = _state(conn, a)
        kind, params = _change(a, row, state)
        conn.execute(_UPDATES[kind], params)
        _account(kind, state, row, source, events, outcome)
        if a.starts_ns:
            exact.append((a.starts_ns, state[0]))
    if exact:  # the most exact start given is kept (the API lists it to the millisecond)
        conn.executemany(_MORE_EXACT, exact)


_MORE_EXACT = "UPDATE alerts SET starts_ns = ? WHERE id = ? AND starts_ns = 0"


def _account(
    kind: str, state: State, row: Row, source: str, events: list[Event], outcome: IngestResult
) -> None:
    """A known episode's receipt is a resolution or a reopening (with its event), or a
    repeat."""
    alert_id, _, _, resolution = state
    if kind == "resolve":
        events.append((alert_id, row[_RECEIVED_AT], "resolved", source, ""))
        outcome.resolved.append(alert_id)
    elif kind == "reopen":
        events.append(
            (alert_id, row[_RECEIVED_AT], "reopened", source, reopened_detail(resolution))
        )
        outcome.reopened.append(alert_id)
    else:
        outcome.repeats += 1


#: The label index's statements ({} the rows' VALUES, bound by _padded): a duplicate row does
#: nothing (each conflicts with the one before it).
_SERIES = (
    "INSERT INTO series (key, fingerprint) VALUES {} ON CONFLICT (key) DO NOTHING RETURNING key, id"
)
_VALUES = "INSERT INTO label_values (key, name, value) VALUES {} ON CONFLICT (key) DO NOTHING"
_POSTINGS = (
    "INSERT INTO postings (value_id, series_id) SELECT v.id, p.column2 FROM (VALUES {}) AS p"
    " JOIN label_values AS v ON v.key = p.column1 WHERE true"
    " ON CONFLICT (value_id, series_id) DO NOTHING"
)
#: The most rows a statement of the label index binds (a power of two).
INDEX_ROWS = 256


@functools.lru_cache(maxsize=64)
def _with_rows(statement: str, width: int, count: int) -> str:
    """`statement` with `count` rows of `width` parameters."""
    return statement.format(", ".join(["(" + ", ".join("?" * width) + ")"] * count))


def _padded(conn: sqlite3.Connection, statement: str, rows: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Run `statement` (_SERIES, _VALUES, _POSTINGS) over `rows`, INDEX_ROWS at a time, each
    run padded with copies of its last row to a power of two (so that a few statements are
    prepared once, and a batch of any size up to INDEX_ROWS costs one). Rows bound as
    parameters, not as JSON: SQLite 3.40's `->>` parses each element again, which cost more
    than the inserts themselves. Returns what the statements returned."""
    returned: list[Any] = []
    for start in range(0, len(rows), INDEX_ROWS):
        chunk = list(rows[start : start + INDEX_ROWS])
        count = 1 << (len(chunk) - 1).bit_length()
        chunk += [chunk[-1]] * (count - len(chunk))
        sql = _with_rows(statement, len(chunk[0]), count)
        returned += conn.execute(sql, list(itertools.chain.from_iterable(chunk))).fetchall()
    return returned


def index_series(conn: sqlite3.Connection, series: NewSeries) -> None:
    """The label index of new episodes (bridge.store.labelindex): their series, and for the
    series new to the store, their label values and postings. A batch whose series are all
    stored already costs one statement (up to INDEX_ROWS series)."""
    made = dict(_padded(conn, _SERIES, [(key, fp) for key, (fp, _) in series.by_key.items()]))
    if not made:
        return
    values, postings = series.entries(made)
    _padded(conn, _VALUES, values)
    _padded(conn, _POSTINGS, postings)


def _new_events(conn: sqlite3.Connection, first: int, last: int, actor: str) -> None:
    """The events of the new rows first..last, as _record_new writes them, made by SQLite."""
    conn.execute(
        "INSERT INTO events (alert_id, at, kind, actor, detail) SELECT id, first_received_at,"
        " CASE status WHEN 'firing' THEN 'fired' ELSE 'resolved' END, ?1,"
        " CASE status WHEN 'firing' THEN '' ELSE 'first seen resolved' END"
        " FROM alerts WHERE id BETWEEN ?2 AND ?3 ORDER BY id",
        (actor, first, last),
    )


def _write_events(conn: sqlite3.Connection, events: list[Event], actor: str | None) -> None:
    if not events:
        return
    if actor is not None:  # who learnt of it, when not the source itself (the reconciler)
        events = [(alert_id, at, kind, actor, detail) for alert_id, at, kind, _, detail in events]
    conn.executemany(
        "INSERT INTO events (alert_id, at, kind, actor, detail) VALUES (?, ?, ?, ?, ?)", events
    )


class IngestJob:
    """Job: apply received alerts by the HA rules; returns what changed (an IngestResult).

    The rows are encoded on construction, in the caller's thread (the event loop, for the
    webhook), so that the single writer thread spends its time in SQLite, which runs without
    the GIL. Jobs of one source and actor that the writer finds queued together run as one
    (`run_together`): the same rows, events and results as running them one after another
    (property-tested), in about six statements in all instead of about four per job.
    """

    __slots__ = ("actor", "alerts", "keys", "rows", "source")

    def __init__(
        self, alerts: Sequence[ReceivedAlert], received_at: int, source: str, actor: str | None
    ) -> None:
        self.alerts = alerts
        self.rows = [_row(a, received_at, source) for a in alerts]
        # The episodes' keys as JSON without its brackets, for the lookup of a big run.
        self.keys = orjson.dumps([[a.fingerprint, a.starts_at] for a in alerts])[1:-1].decode()
        self.source = source
        self.actor = actor

    @property
    def merge_key(self) -> tuple[str, str | None]:
        """Jobs with equal keys may run together."""
        return self.source, self.actor

    def __call__(self, conn: sqlite3.Connection) -> IngestResult:
        return _apply(conn, [self])[0]

    @staticmethod
    def run_together(conn: sqlite3.Connection, jobs: Sequence[IngestJob]) -> list[IngestResult]:
        """Run jobs of one merge_key as one, in order; one IngestResult per job."""
        return _apply(conn, jobs)


def _apply(conn: sqlite3.Connection, jobs: Sequence[IngestJob]) -> list[IngestResult]:
    source, actor = jobs[0].source, jobs[0].actor
    results = [IngestResult() for _ in jobs]
    receipts = [
        (a, row, outcome)
        for job, outcome in zip(jobs, results, strict=True)
        for a, row in zip(job.alerts, job.rows, strict=True)
    ]
    events: list[Event] = []
    new: list[ReceivedAlert] = []
    new_rows: list[Row] = []
    known: list[Known] = []
    if len(receipts) <= SMALL_BATCH:  # try the insert; a conflict means the episode is known
        for a, row, outcome in receipts:
            inserted = conn.execute(_INSERT_OR_SKIP, row).fetchone()
            if inserted is None:
                known.append((a, row, None, outcome))
            else:
                new.append(a)
                new_rows.append(row)
                _record_new(inserted[0], a, row, source, events, outcome)
    else:
        keys = ",".join(job.keys for job in jobs if job.keys)
        stored = _stored(conn, f"[{keys}]")
        new_results: list[IngestResult] = []
        seen: set[tuple[str, int]] = set()
        for a, row, outcome in receipts:
            key = (a.fingerprint, a.starts_at)
            if key in seen:  # a second receipt here: it must read what the first changed
                known.append((a, row, None, outcome))
            elif key in stored:
                known.append((a, row, stored[key], outcome))
            else:
                new.append(a)
                new_rows.append(row)
                new_results.append(outcome)
            seen.add(key)
        if new:
            ids = _insert_new(conn, new, new_rows)
            if ids[-1] - ids[0] == len(ids) - 1:  # consecutive: SQLite writes the events
                _new_events(conn, ids[0], ids[-1], source if actor is None else actor)
                for alert_id, a, outcome in zip(ids, new, new_results, strict=True):
                    (outcome.fired if a.status == "firing" else outcome.resolved).append(alert_id)
            else:
                for alert_id, a, row, outcome in zip(ids, new, new_rows, new_results, strict=True):
                    _record_new(alert_id, a, row, source, events, outcome)
    _count_new(conn, new)
    if new:
        series = NewSeries()
        for a, row in zip(new, new_rows, strict=True):
            series.add(a.fingerprint, row[_LABELS], a.labels)
        index_series(conn, series)
    _apply_known(conn, known, source, events)
    _write_events(conn, events, actor)
    return results


def ingest(
    alerts: Sequence[ReceivedAlert],
    received_at: int,
    source: str = "alertmanager",
    actor: str | None = None,
) -> IngestJob:
    """Job: apply received alerts by the HA rules at `received_at`; returns what changed."""
    return IngestJob(alerts, received_at, source, actor)
