"""The SQLite store: HA delivery rules, order independence, actions, listing, retention."""

from __future__ import annotations

import functools
import random
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.errors import Conflict, NotFound, QueryTimeout, StoreError, Unprocessable
from bridge.core.matchers import Matcher
from bridge.core.model import dumps_map
from bridge.core.times import NS
from bridge.ingest.episodes import INSERT_ROWS, IngestJob, IngestResult, ingest
from bridge.ingest.webhook import ReceivedAlert
from bridge.store.sqlite.actions import (
    acknowledge,
    add_note,
    assign,
    prune,
    set_retention,
    unacknowledge,
)
from bridge.store.sqlite.database import (
    MIGRATIONS,
    AlertQuery,
    Store,
    get_alert,
    get_events,
    get_retention,
    list_alerts,
    state_counts,
)

T0 = 1_795_428_000 * NS


def received(
    status: str = "firing",
    starts: int = T0,
    ends: int | None = None,
    fingerprint: str = "0123456789abcdef",
    **labels: str,
) -> ReceivedAlert:
    all_labels = {"alertname": "high_cpu", "severity": "warning", "instance": "a:1", **labels}
    return ReceivedAlert(
        fingerprint=fingerprint,
        status=status,
        starts_at=starts,
        ends_at=ends if status == "resolved" else None,
        labels=dict(sorted(all_labels.items())),
        annotations={"summary": f"{status} at {ends}"},
        generator_url="",
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "alerts.db")
    yield s
    s.close()


def rows(store: Store) -> list[tuple[object, ...]]:
    return store.read(
        lambda c: c.execute(
            "SELECT fingerprint, starts_at, status, ends_at, receive_count FROM alerts ORDER BY id"
        ).fetchall()
    )


def kinds(store: Store, alert_id: int) -> list[str]:
    return [e.kind for e in store.read(lambda c: get_events(c, alert_id))]


def test_schema_pragmas(store: Store) -> None:
    """WAL, synchronous=FULL, and user_version = number of migrations."""
    conn = store.new_connection()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database written by a newer alertbridge is not touched."""
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="newer than this alertbridge"):
        Store(path)


def test_reopening_keeps_data_and_does_not_migrate_twice(tmp_path: Path) -> None:
    """Opening an existing database applies no migration again."""
    first = Store(tmp_path / "a.db")
    first.run(ingest([received()], T0))
    first.close()
    second = Store(tmp_path / "a.db")
    assert len(rows(second)) == 1
    second.close()


def test_firing_then_resolved(store: Store) -> None:
    """One episode: fired, then resolved with its end time; two events."""
    fired = store.run(ingest([received()], T0))
    done = store.run(ingest([received("resolved", ends=T0 + 60 * NS)], T0 + 61 * NS))
    assert fired.fired == done.resolved == [1]
    assert rows(store) == [("0123456789abcdef", T0, "resolved", T0 + 60 * NS, 2)]
    assert kinds(store, 1) == ["fired", "resolved"]


def test_exact_repeat_only_counts(store: Store) -> None:
    """The same (fingerprint, startsAt, status) again is a no-op but for receive_count."""
    store.run(ingest([received()], T0))
    result = store.run(ingest([received(), received()], T0 + NS))
    assert (result.fired, result.resolved, result.repeats) == ([], [], 2)
    assert rows(store) == [("0123456789abcdef", T0, "firing", None, 3)]
    assert kinds(store, 1) == ["fired"]


def test_stale_firing_never_reopens(store: Store) -> None:
    """A late firing of a resolved episode (HA replica) leaves it resolved."""
    store.run(ingest([received(), received("resolved", ends=T0 + 60 * NS)], T0))
    store.run(ingest([received()], T0 + 65 * NS))
    assert rows(store)[0][2:4] == ("resolved", T0 + 60 * NS)


def test_new_episode_is_a_new_row(store: Store) -> None:
    """A re-fire has a new startsAt: a second episode with its own id."""
    store.run(ingest([received(), received("resolved", ends=T0 + 60 * NS)], T0))
    result = store.run(ingest([received(starts=T0 + 120 * NS)], T0 + 121 * NS))
    assert result.fired == [2]
    assert [r[2] for r in rows(store)] == ["resolved", "firing"]


def test_old_resolved_never_touches_newer_episode(store: Store) -> None:
    """A stale resolved of the previous episode arriving after a new one fired."""
    store.run(ingest([received()], T0))
    store.run(ingest([received(starts=T0 + 120 * NS)], T0 + 121 * NS))
    store.run(ingest([received("resolved", ends=T0 + 60 * NS)], T0 + 122 * NS))
    assert [(r[1], r[2]) for r in rows(store)] == [(T0, "resolved"), (T0 + 120 * NS, "firing")]


def test_resolved_first_then_firing(store: Store) -> None:
    """Resolved before its firing (reordered): stored resolved, the firing changes nothing."""
    store.run(ingest([received("resolved", ends=T0 + 60 * NS)], T0))
    store.run(ingest([received()], T0 + NS))
    assert rows(store) == [("0123456789abcdef", T0, "resolved", T0 + 60 * NS, 2)]
    assert kinds(store, 1) == ["resolved"]


def test_earliest_end_wins(store: Store) -> None:
    """Two replicas report slightly different ends: the earliest is kept, in either order."""
    store.run(ingest([received("resolved", ends=T0 + 62 * NS)], T0))
    store.run(ingest([received("resolved", ends=T0 + 60 * NS)], T0))
    store.run(ingest([received("resolved", ends=T0 + 61 * NS)], T0))
    assert rows(store)[0][3] == T0 + 60 * NS


Receipt = tuple[int, str, int]  # (episode index, status, end offset in seconds)

episodes = st.integers(min_value=1, max_value=3)


@st.composite
def deliveries(draw: st.DrawFn) -> list[Receipt]:
    """The receipts of a few episodes of one alert, each delivered 1-3 times (HA)."""
    out: list[Receipt] = []
    for index in range(draw(episodes)):
        resolved = draw(st.booleans()) or index < 2
        out += [(index, "firing", 0)] * draw(st.integers(1, 3))
        if resolved:
            ends = draw(st.lists(st.integers(60, 65), min_size=1, max_size=3))
            out += [(index, "resolved", e) for e in ends]
    return out


def _final(receipts: list[Receipt], chunks: list[int]) -> list[tuple[object, ...]]:
    with tempfile.TemporaryDirectory(prefix="order-") as tmp:
        return _replay(Store(Path(tmp) / "alerts.db"), receipts, chunks)


def _replay(store: Store, receipts: list[Receipt], chunks: list[int]) -> list[tuple[object, ...]]:
    """Deliver the receipts in notifications of the given sizes (cycling), as replicas would."""
    alerts = []
    for index, status, end in receipts:
        starts = T0 + index * 1000 * NS
        alerts.append(received(status, starts=starts, ends=starts + end * NS))
    try:
        position, sizes = 0, iter(chunks * (len(alerts) + 1))
        while position < len(alerts):
            size = next(sizes)
            store.run(ingest(alerts[position : position + size], T0))
            position += size
        return sorted(rows(store), key=lambda r: (str(r[0]), int(r[1])))  # type: ignore[call-overload]
    finally:
        store.close()


@settings(max_examples=60, deadline=None)
@given(
    deliveries(),
    st.randoms(use_true_random=False),
    st.lists(st.integers(1, 6), min_size=1, max_size=4),
)
def test_arrival_order_does_not_change_final_state(
    receipts: list[Receipt], rng: random.Random, chunks: list[int]
) -> None:
    """Shuffled HA deliveries, one by one or in notifications of several alerts (both ingest
    paths), end in the same rows: one per episode, same status, end and receive count."""
    shuffled = receipts[:]
    rng.shuffle(shuffled)
    ordered = _final(receipts, [1])
    mixed = _final(shuffled, chunks)
    assert ordered == mixed
    expected_resolved = {i for i, s, _ in receipts if s == "resolved"}
    assert len(ordered) == len({i for i, _, _ in receipts})
    assert {i for i, row in enumerate(ordered) if row[2] == "resolved"} == expected_resolved
    assert sum(int(row[4]) for row in ordered) == len(receipts)  # type: ignore[call-overload]


def _everything(store: Store) -> list[list[tuple[object, ...]]]:
    """Every stored row of the alert tables, ids included; each alert's events in order (the
    interleaving of different alerts' events is not part of the contract)."""
    queries = (
        "SELECT * FROM alerts ORDER BY id",
        "SELECT alert_id, at, kind, actor, detail FROM events ORDER BY alert_id, id",
        "SELECT * FROM alert_counts ORDER BY 1, 2",
    )
    return store.read(lambda c: [c.execute(sql).fetchall() for sql in queries])


def _sorted(result: IngestResult) -> IngestResult:
    """The ids as sets: the order of one job's ids is not part of the contract."""
    return IngestResult(sorted(result.fired), sorted(result.resolved), result.repeats)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(deliveries(), min_size=1, max_size=3),
    st.randoms(use_true_random=False),
    st.lists(st.integers(1, 4), min_size=1, max_size=8),
    st.sampled_from([None, "reconciler"]),
)
def test_jobs_run_together_as_if_one_after_another(
    alerts: list[list[Receipt]], rng: random.Random, sizes: list[int], actor: str | None
) -> None:
    """The writer runs queued ingest jobs as one (IngestJob.run_together): same rows (ids,
    times, receive counts), events, counts and per-job results as running each in turn, whatever
    the mix of new episodes, repeats, resolutions and receipts of one episode in several jobs."""
    received_alerts = []
    for number, receipts in enumerate(alerts):
        for index, status, end in receipts:
            starts = T0 + index * 1000 * NS
            fingerprint = f"{number + 1:016x}"
            received_alerts.append(received(status, starts, starts + end * NS, fingerprint))
    rng.shuffle(received_alerts)
    chunks, position = [], 0
    for size in sizes * len(received_alerts):
        if position >= len(received_alerts):
            break
        chunks.append(received_alerts[position : position + size])
        position += size
    jobs = [ingest(chunk, T0 + i * NS, actor=actor) for i, chunk in enumerate(chunks)]
    with tempfile.TemporaryDirectory(prefix="together-") as tmp:
        one_by_one, together = Store(Path(tmp) / "a.db"), Store(Path(tmp) / "b.db")
        try:
            expected = [one_by_one.run(job) for job in jobs]
            got = together.run(lambda c: IngestJob.run_together(c, jobs))
            assert [_sorted(r) for r in got] == [_sorted(r) for r in expected]
            # A receipt is a new episode (fired, or first seen resolved), a resolution or a repeat.
            assert sum(len(r.fired) + len(r.resolved) + r.repeats for r in got) == len(
                received_alerts
            )
            assert _everything(together) == _everything(one_by_one)
            received_at: dict[tuple[object, ...], list[int]] = {}
            for i, chunk in enumerate(chunks):
                for a in chunk:
                    received_at.setdefault((a.fingerprint, a.starts_at), []).append(T0 + i * NS)
            stored = together.read(
                lambda c: c.execute(
                    "SELECT fingerprint, starts_at, first_received_at, last_received_at FROM alerts"
                ).fetchall()
            )
            assert {(fp, s): [first, last] for fp, s, first, last in stored} == {
                key: [times[0], times[-1]] for key, times in received_at.items()
            }
        finally:
            one_by_one.close()
            together.close()


def test_ack_unack_note_assign_and_their_events(store: Store) -> None:
    """Each action changes the row and appends an event with its actor."""
    store.run(ingest([received()], T0))
    acked = store.run(acknowledge(1, "alice", "looking", T0 + NS))
    assert (acked.acknowledged, acked.acked_by, acked.ack_comment, acked.state) == (
        True, "alice", "looking", "acknowledged")  # fmt: skip
    with pytest.raises(Conflict, match="already acknowledged by alice"):
        store.run(acknowledge(1, "bob", "", T0 + NS))
    store.run(add_note(1, "bob", "disk is fine", T0 + 2 * NS))
    assert store.run(assign(1, "bob", "carol", T0 + 3 * NS)).assignee == "carol"
    assert store.run(assign(1, "bob", "", T0 + 4 * NS)).assignee is None
    unacked = store.run(unacknowledge(1, "alice", "false alarm", T0 + 5 * NS))
    assert unacked.state == "firing"
    with pytest.raises(Conflict, match="not acknowledged"):
        store.run(unacknowledge(1, "alice", "", T0))
    events = store.read(lambda c: get_events(c, 1))
    assert [(e.kind, e.actor, e.detail) for e in events] == [
        ("fired", "alertmanager", ""),
        ("acknowledged", "alice", "looking"),
        ("note", "bob", "disk is fine"),
        ("assigned", "bob", "carol"),
        ("assigned", "bob", ""),
        ("unacknowledged", "alice", "false alarm"),
    ]


def test_action_errors(store: Store) -> None:
    """Unknown id is NotFound, a resolved alert cannot be acked, bad values are Unprocessable."""
    with pytest.raises(NotFound, match="no alert with id 7"):
        store.run(acknowledge(7, "a", "", T0))
    store.run(ingest([received("resolved", ends=T0)], T0))
    with pytest.raises(Conflict, match="resolved"):
        store.run(acknowledge(1, "a", "", T0))
    with pytest.raises(Unprocessable, match="by"):
        acknowledge(1, "", "", T0)
    with pytest.raises(Unprocessable, match="text"):
        add_note(1, "a", "   ", T0)
    with pytest.raises(Unprocessable, match="comment"):
        acknowledge(1, "a", 5, T0)
    with pytest.raises(Unprocessable, match="at most"):
        add_note(1, "a", "x" * 10_001, T0)
    assert kinds(store, 1) == ["resolved"]  # nothing half-written


def test_list_filters_and_pagination(store: Store) -> None:
    """status, severity, rule, label matchers, time range, ack and id cursor all narrow."""
    alerts = [
        received(
            fingerprint=f"{i:016x}", starts=T0 + i * NS, alertname=name, severity=sev, team=team
        )
        for i, (name, sev, team) in enumerate(
            [
                ("high_cpu", "warning", "infra"),
                ("critical_cpu", "critical", "infra"),
                ("slow_search", "warning", "search"),
                ("high_cpu", "warning", "search"),
            ]
        )
    ]
    store.run(ingest(alerts, T0))
    store.run(ingest([received("resolved", starts=T0 + 3 * NS, ends=T0 + 9 * NS,
                               fingerprint=f"{3:016x}")], T0))  # fmt: skip
    store.run(acknowledge(1, "a", "", T0))

    def ids(**kw: object) -> list[int]:
        return [a.id for a in store.read(lambda c: list_alerts(c, AlertQuery(**kw)))]  # type: ignore[arg-type]

    assert ids() == [4, 3, 2, 1]
    assert ids(status="firing") == [3, 2, 1]
    assert ids(severities=("critical",)) == [2]
    assert ids(rule="high_cpu") == [4, 1]
    assert ids(matchers=(Matcher.parse('team="search"'),)) == [4, 3]
    assert ids(matchers=(Matcher.parse('team!="search"'),)) == [2, 1]
    assert ids(matchers=(Matcher.parse('alertname=~"high.*|slow_search"'),)) == [4, 3, 1]
    assert ids(matchers=(Matcher.parse('team!~"inf.*"'),)) == [4, 3]
    assert ids(matchers=(Matcher.parse('absent=""'),)) == [4, 3, 2, 1]
    assert ids(since=T0 + NS, until=T0 + 3 * NS) == [3, 2]
    assert ids(acknowledged=True) == [1]
    assert ids(acknowledged=False, status="firing") == [3, 2]
    assert ids(limit=2) == [4, 3]
    assert ids(limit=2, before_id=3) == [2, 1]


def test_retention_persists_and_prunes_only_old_resolved(store: Store) -> None:
    """Resolved alerts older than the retention go with their events; firing ones stay."""
    day = 86400 * NS
    store.run(ingest([received("resolved", starts=T0, ends=T0 + NS, fingerprint="a" * 16),
                      received("resolved", starts=T0, ends=T0 + 9 * day, fingerprint="b" * 16),
                      received(starts=T0, fingerprint="c" * 16)], T0))  # fmt: skip
    assert store.read(get_retention) == 90
    assert store.run(set_retention(7)) == 7
    assert store.read(get_retention) == 7
    removed = store.run(prune(T0 + 10 * day))
    assert removed == 1
    left = store.read(lambda c: list_alerts(c, AlertQuery()))
    assert sorted(a.fingerprint for a in left) == ["b" * 16, "c" * 16]
    orphan = store.read(lambda c: c.execute("SELECT count(*) FROM events WHERE alert_id = 1"))
    assert orphan.fetchone()[0] == 0
    assert store.run(prune(T0 + 400 * day)) == 1  # b; c is firing and always kept
    with pytest.raises(Unprocessable):
        set_retention(0)


def test_get_alert_json_shape(store: Store) -> None:
    """to_json gives RFC 3339 times and the derived state."""
    store.run(ingest([received()], T0))
    data = store.read(lambda c: get_alert(c, 1)).to_json()
    assert data["starts_at"] == "2026-11-23T10:00:00Z"
    assert data["ends_at"] is None
    assert data["state"] == "firing"
    assert data["labels"]["alertname"] == "high_cpu"


def brute_counts(store: Store) -> dict[tuple[str, str], int]:
    rows = store.read(
        lambda c: c.execute(
            "SELECT CASE WHEN status = 'resolved' THEN 'resolved' WHEN acked_at IS NOT NULL"
            " THEN 'acknowledged' ELSE 'firing' END, severity, count(*) FROM alerts GROUP BY 1, 2"
        ).fetchall()
    )
    return {(state, severity): count for state, severity, count in rows}


operations = st.lists(
    st.tuples(
        st.sampled_from(["fire", "resolve", "ack", "unack", "prune", "batch"]),
        st.integers(0, 5),
        st.sampled_from(["warning", "critical"]),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(operations)
def test_kept_counts_equal_a_full_scan(ops: list[tuple[str, int, str]]) -> None:
    """Whatever happens to alerts, the kept counts equal counting every row."""
    with tempfile.TemporaryDirectory(prefix="counts-") as tmp:
        store = Store(Path(tmp) / "a.db")
        try:
            for op, i, severity in ops:
                fp = f"{i:016x}"
                try:
                    if op == "fire":
                        store.run(ingest([received(fingerprint=fp, severity=severity)], T0))
                    elif op == "resolve":
                        store.run(ingest([received("resolved", ends=T0 + NS, fingerprint=fp,
                                                   severity=severity)], T0))  # fmt: skip
                    elif op == "batch":  # the batch path: new, known and repeated in one
                        store.run(ingest([received(fingerprint=f"{j:016x}", severity=severity)
                                          for j in (i, i + 1, i, 9)], T0))  # fmt: skip
                    elif op == "ack":
                        store.run(acknowledge(i + 1, "a", "", T0))
                    elif op == "unack":
                        store.run(unacknowledge(i + 1, "a", "", T0))
                    else:
                        store.run(set_retention(1))
                        store.run(prune(T0 + 400 * 86400 * NS))
                except (NotFound, Conflict):
                    pass
                assert store.read(state_counts) == brute_counts(store)
        finally:
            store.close()


def test_upgrade_from_v3_keeps_counting_inserts(tmp_path: Path) -> None:
    """Migration 4 drops the insert trigger; the ingest job counts new rows instead."""
    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:3], start=1):
        conn.executescript(f"BEGIN; {script} PRAGMA user_version = {number}; COMMIT;")
    conn.close()
    store = Store(path)  # migrates to the current version
    alerts = [
        received(),
        received(fingerprint="f" * 16, severity="critical"),
        received("resolved", ends=T0 + NS, fingerprint="e" * 16),
    ]
    store.run(ingest(alerts, T0))
    expected = {("firing", "warning"): 1, ("firing", "critical"): 1, ("resolved", "warning"): 1}
    assert store.read(state_counts) == brute_counts(store) == expected
    sql = "SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name"
    triggers = store.read(lambda c: c.execute(sql).fetchall())
    assert triggers == [("alerts_count_delete",), ("alerts_count_update",)]
    store.close()


def test_labels_are_stored_as_dumps_map_writes_them(store: Store) -> None:
    """Both insert paths store labels/annotations as sorted compact JSON, escapes included."""
    odd = {"alertname": "x", "z": 'quote " back \\ tab \t é ✓ \u0001', "a": "</script>"}
    alerts = [ReceivedAlert(f"{i:016x}", "firing", T0, None, odd, odd, "") for i in range(4)]
    store.run(ingest(alerts[:1], T0))  # the small path
    store.run(ingest(alerts[1:], T0))  # the batch path
    rows = store.read(lambda c: c.execute("SELECT labels, annotations FROM alerts").fetchall())
    assert rows == [(dumps_map(odd), dumps_map(odd))] * 4


def test_upgrade_from_v2_counts_existing_rows(tmp_path: Path) -> None:
    """Migration 3 counts the alerts a v2 database already holds."""
    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:2], start=1):
        conn.executescript(f"BEGIN; {script} PRAGMA user_version = {number}; COMMIT;")
    # rows as a v2 bridge wrote them (today's ingest job needs the v4 schema)
    conn.executemany(
        "INSERT INTO alerts (fingerprint, starts_at, ends_at, status, alertname, severity,"
        " labels, annotations, generator_url, source, first_received_at, last_received_at,"
        " receive_count, updated_at) VALUES (?, ?, ?, ?, 'high_cpu', 'warning', '{}', '{}', '',"
        " 'alertmanager', ?, ?, 1, ?)",
        [("0" * 16, T0, None, "firing", T0, T0, T0),
         ("f" * 16, T0, T0 + NS, "resolved", T0, T0, T0)],
    )  # fmt: skip
    conn.close()
    store = Store(path)
    assert store.read(state_counts) == {("firing", "warning"): 1, ("resolved", "warning"): 1}
    store.close()


def test_failed_migration_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A migration that fails half-way is rolled back whole; the version stays."""
    monkeypatch.setattr(
        "bridge.store.sqlite.database.MIGRATIONS",
        (*MIGRATIONS, "CREATE TABLE half (x); SELECT nosuch();"),
    )
    with pytest.raises(StoreError, match="no such function"):
        Store(tmp_path / "a.db")
    conn = sqlite3.connect(tmp_path / "a.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "half" not in tables
    conn.close()


@pytest.mark.parametrize("actor", [None, "reconciler"])
def test_events_of_new_episodes_are_the_same_on_both_paths(store: Store, actor: str | None) -> None:
    """fired / resolved ("first seen resolved") events with the source or the given actor,
    whether the notification takes the small path or the batch path."""
    firing = [received(fingerprint=f"{i:016x}") for i in range(1, 3)]
    resolved = [received("resolved", ends=T0 + NS, fingerprint=f"{i:016x}") for i in range(3, 5)]
    store.run(ingest([firing[0], resolved[0]], T0, actor=actor))  # the small path
    store.run(ingest([firing[1], resolved[1], received(fingerprint="f" * 16)], T0, actor=actor))
    who = actor or "alertmanager"
    events = []
    for alert_id in range(1, 6):
        stored = store.read(functools.partial(get_events, alert_id=alert_id))
        events += [(e.kind, e.actor, e.detail, e.at) for e in stored]
    assert events == [
        ("fired", who, "", T0),
        ("resolved", who, "first seen resolved", T0),
        ("fired", who, "", T0),
        ("resolved", who, "first seen resolved", T0),
        ("fired", who, "", T0),
    ]


def test_new_episodes_without_consecutive_ids_are_looked_up(store: Store) -> None:
    """Once the largest rowid is taken SQLite picks new ids at random: the batch path then looks
    each new episode's id up and writes its events itself, with the same results."""
    store.run(
        lambda c: c.execute(
            "INSERT INTO alerts (id, fingerprint, starts_at, status, alertname, severity, labels,"
            " annotations, generator_url, source, first_received_at, last_received_at,"
            " receive_count, updated_at) VALUES (9223372036854775807, 'ffffffffffffffff', ?,"
            " 'firing', 'high_cpu', 'warning', '{}', '{}', '', 'alertmanager', ?, ?, 1, ?)",
            (T0, T0, T0, T0),
        )
    )
    new = [received(fingerprint=f"{i:016x}") for i in range(1, 4)]
    new.append(received("resolved", ends=T0 + NS, fingerprint="e" * 16))
    result = store.run(ingest(new, T0 + NS))
    ids = {
        fp: alert_id
        for alert_id, fp in store.read(lambda c: c.execute("SELECT id, fingerprint FROM alerts"))
    }
    assert result.fired == [ids[a.fingerprint] for a in new[:3]]
    assert result.resolved == [ids["e" * 16]]
    new_ids = sorted(result.fired + result.resolved)
    assert new_ids != list(range(new_ids[0], new_ids[0] + len(new)))  # the case under test
    for a in new:
        events = store.read(functools.partial(get_events, alert_id=ids[a.fingerprint]))
        assert [(e.kind, e.at) for e in events] == [
            ("fired" if a.status == "firing" else "resolved", T0 + NS)
        ]


@pytest.mark.parametrize("count", [3, INSERT_ROWS - 1, INSERT_ROWS, 2 * INSERT_ROWS + 7])
def test_new_episodes_inserted_many_rows_a_statement(count: int) -> None:
    """The batch path inserts new episodes up to INSERT_ROWS rows a statement (in powers of
    two): whatever the count, the rows (ids in the notification's order, every column), events
    and counts are those of receiving the same alerts one per notification (the small path)."""
    alerts = [
        received(
            "resolved" if i % 3 == 0 else "firing",
            starts=T0 + i * NS,
            ends=T0 + (i + 60) * NS,
            fingerprint=f"{i + 1:016x}",
            instance=f"host{i}:9100",
        )
        for i in range(count)
    ]
    with tempfile.TemporaryDirectory(prefix="rows-") as tmp:
        one_by_one, at_once = Store(Path(tmp) / "a.db"), Store(Path(tmp) / "b.db")
        try:
            for a in alerts:
                one_by_one.run(ingest([a], T0))
            traced: list[str] = []
            job = ingest(alerts, T0)

            def traced_job(conn: sqlite3.Connection) -> IngestResult:
                conn.set_trace_callback(traced.append)
                try:
                    return job(conn)
                finally:
                    conn.set_trace_callback(None)

            result = at_once.run(traced_job)
            assert sorted(result.fired + result.resolved) == list(range(1, count + 1))
            assert _everything(at_once) == _everything(one_by_one)
            # Not a statement per row: full statements, then the rest in powers of two.
            inserts = sum(1 for sql in traced if sql.startswith("INSERT INTO alerts "))
            assert inserts == count // INSERT_ROWS + (count % INSERT_ROWS).bit_count()
        finally:
            one_by_one.close()
            at_once.close()


def test_long_reads_take_turns_and_short_ones_do_not(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a read budget (the server's), a read running past a millisecond pauses as long,
    again and again (so the event loop gets the GIL and a core); a short read never pauses,
    nor does any read of a store without a budget (the CLI's, exports)."""
    from bridge.store.sqlite.database import _READ_TURN

    pauses: list[float] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr("bridge.store.sqlite.database.time.sleep", sleep)
    store.query_timeout = 60  # the server's stores have a budget; the CLI's never pause
    store.read(lambda c: c.execute("SELECT 1").fetchall())
    assert pauses == []
    slow = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000000)"
        " SELECT count(*) FROM n"
    )
    store.read(lambda c: c.execute(slow).fetchall())
    assert len(pauses) >= 2
    assert set(pauses) == {_READ_TURN}
    pauses.clear()
    store.query_timeout = None
    store.read(lambda c: c.execute(slow).fetchall())
    assert pauses == []


def test_a_read_over_its_budget_is_stopped(store: Store) -> None:
    """Past query_timeout SQLite interrupts the statement: QueryTimeout, and the connection
    serves the next read."""
    store.query_timeout = 0.05
    endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT max(i) FROM n"
    started = time.monotonic()
    with pytest.raises(QueryTimeout, match=r"longer than 0\.05s"):
        store.read(lambda c: c.execute(endless).fetchall())
    assert time.monotonic() - started < 5
    assert store.read(lambda c: c.execute("SELECT 2").fetchone()) == (2,)
