"""How episodes end: Alertmanager's resolutions are final; the bridge's own (inferred by the
reconciler, by an operator's hand) are provisional and reopened by a later firing delivery;
the embedded evaluator's stay resolved. Order independence holds with reopenings."""

from __future__ import annotations

import random
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.errors import Conflict
from bridge.core.times import NS
from bridge.store.sqlite.actions import resolve, resolve_inferred
from bridge.store.sqlite.database import Database
from bridge.store.sqlite.queries import get_alert, get_events
from bridge.store.sqlite.schema import MIGRATIONS, migrate
from tests.stores import T0, ingest, received
from tests.stores import alert_rows as rows


def kinds(store: Database, alert_id: int) -> list[str]:
    return [e.kind for e in store.read(lambda c: get_events(c, alert_id))]


@pytest.fixture
def store(tmp_path: Path) -> Database:
    return Database(tmp_path / "a.db")


def test_an_inferred_resolution_is_reopened_by_a_firing(store: Database) -> None:
    """Resolved by the reconciler, then Alertmanager delivers the episode firing: it fires
    again, with a "reopened" event that says why; the counts follow."""
    store.run(ingest([received()], T0))
    store.run(resolve_inferred(1, T0 + NS, "gone from the list"))
    assert store.read(lambda c: get_alert(c, 1)).resolution == "inferred"
    result = store.run(ingest([received()], T0 + 2 * NS))
    assert result.reopened == [1]
    alert = store.read(lambda c: get_alert(c, 1))
    assert (alert.status, alert.ends_at, alert.resolution) == ("firing", None, None)
    assert kinds(store, 1) == ["fired", "resolved", "reopened"]
    trail = store.read(lambda c: c.execute(
        "SELECT actor, detail FROM events WHERE kind = 'reopened'").fetchone())  # fmt: skip
    assert trail == (
        "alertmanager",
        "Alertmanager has it firing again after it was resolved by the reconciler",
    )
    counts = store.read(lambda c: c.execute(
        "SELECT state, count FROM alert_counts WHERE count > 0").fetchall())  # fmt: skip
    assert counts == [("firing", 1)]


def test_a_manual_resolution_is_reopened_by_a_firing(store: Database) -> None:
    """The operator was wrong: Alertmanager still has it firing."""
    store.run(ingest([received()], T0))
    resolved = store.run(resolve(1, "ann", "looks fine", T0 + NS))
    assert (resolved.status, resolved.resolution, resolved.ends_at) == (
        "resolved", "manual", T0 + NS)  # fmt: skip
    with pytest.raises(Conflict, match="already resolved"):
        store.run(resolve(1, "ann", "", T0 + NS))
    assert store.run(ingest([received()], T0 + 2 * NS)).reopened == [1]
    events = store.read(lambda c: c.execute(
        "SELECT kind, actor, detail FROM events ORDER BY id").fetchall())  # fmt: skip
    assert events[1:] == [
        ("resolved", "ann", "looks fine"),
        (
            "reopened",
            "alertmanager",
            "Alertmanager has it firing again after it was resolved by hand",
        ),
    ]


def test_a_manual_resolution_of_a_local_alert_sticks(store: Database) -> None:
    """The embedded evaluator's alert resolved by hand stays resolved when the evaluator
    reports the episode again."""
    store.run(ingest([received()], T0, source="local"))
    store.run(resolve(1, "ann", "", T0 + NS))
    result = store.run(ingest([received()], T0 + 2 * NS, source="local"))
    assert (result.reopened, result.repeats) == ([], 1)
    assert store.read(lambda c: get_alert(c, 1)).status == "resolved"


def test_alertmanagers_resolved_makes_it_final(store: Database) -> None:
    """A resolved delivery after an inferred resolution: final, with Alertmanager's end (the
    earlier); a stale firing after it reopens nothing."""
    store.run(ingest([received()], T0))
    store.run(resolve_inferred(1, T0 + 90 * NS, "gone"))
    store.run(ingest([received("resolved", ends=T0 + 60 * NS)], T0 + 91 * NS))
    alert = store.read(lambda c: get_alert(c, 1))
    assert (alert.resolution, alert.ends_at) == ("alertmanager", T0 + 60 * NS)
    assert store.run(ingest([received()], T0 + 92 * NS)).reopened == []
    assert store.read(lambda c: get_alert(c, 1)).status == "resolved"


def test_new_episodes_record_how_they_ended(store: Database) -> None:
    """First seen resolved: final (Alertmanager's, or the evaluator's for local ones)."""
    store.run(ingest([received("resolved", ends=T0 + NS)], T0))
    store.run(ingest([received("resolved", ends=T0 + NS, fingerprint="f" * 16)], T0,
                     source="local"))  # fmt: skip
    resolutions = store.read(lambda c: c.execute(
        "SELECT resolution FROM alerts ORDER BY id").fetchall())  # fmt: skip
    assert resolutions == [("alertmanager",), ("local",)]


def test_migration_5_records_how_stored_episodes_ended(tmp_path: Path) -> None:
    """An older database: resolved episodes become final, except those the reconciler
    resolved, which become inferred (a later firing can reopen them)."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:4], start=1):
        conn.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")
    for i, (status, actor) in enumerate([("resolved", "alertmanager"), ("resolved", "reconciler"),
                                         ("firing", "alertmanager")], start=1):  # fmt: skip
        conn.execute(
            "INSERT INTO alerts (id, fingerprint, starts_at, status, alertname, severity, labels,"
            " annotations, generator_url, source, first_received_at, last_received_at,"
            " receive_count, updated_at) VALUES (?, ?, 1, ?, 'a', 'warning', '{}', '{}', '',"
            " 'alertmanager', 1, 1, 1, 1)", (i, f"{i:016x}", status),
        )  # fmt: skip
        conn.execute("INSERT INTO events (alert_id, at, kind, actor, detail) VALUES"
                     " (?, 1, ?, ?, '')", (i, "resolved" if status == "resolved" else "fired",
                                           actor))  # fmt: skip
    assert migrate(conn) == len(MIGRATIONS)
    got = conn.execute("SELECT id, resolution, am_silenced_by FROM alerts ORDER BY id").fetchall()
    assert got == [(1, "alertmanager", "[]"), (2, "inferred", "[]"), (3, None, "[]")]
    conn.close()


# --- order independence with the bridge's own resolutions ------------------------------

Step = tuple[str, int]  # ("firing" | "resolved", end offset) or ("infer" | "manual", 0)


@st.composite
def histories(draw: st.DrawFn) -> list[Step]:
    """One episode: 1-3 firing deliveries, maybe resolved deliveries (HA: 1-3), and 0-2 of the
    bridge's own resolutions, in a random order."""
    steps: list[Step] = [("firing", 0)] * draw(st.integers(1, 3))
    if draw(st.booleans()):
        steps += [("resolved", e) for e in draw(st.lists(st.integers(60, 65), min_size=1,
                                                         max_size=3))]  # fmt: skip
    steps += [(draw(st.sampled_from(["infer", "manual"])), 0)] * draw(st.integers(0, 2))
    return steps


def _play(steps: list[Step]) -> tuple[object, ...]:
    with tempfile.TemporaryDirectory(prefix="reopen-") as tmp:
        store = Database(Path(tmp) / "a.db")
        try:
            for n, (kind, end) in enumerate(steps):
                at = T0 + (n + 1) * NS
                if kind in ("firing", "resolved"):
                    store.run(ingest([received(kind, ends=T0 + end * NS)], at))
                elif store.read(lambda c: c.execute("SELECT count(*) FROM alerts").fetchone())[0]:
                    job = resolve_inferred(1, at, "gone") if kind == "infer" else None
                    if job is not None:
                        store.run(job)
                    elif store.read(lambda c: get_alert(c, 1)).status == "firing":
                        store.run(resolve(1, "ann", "", at))
            (row,) = rows(store)
            return row
        finally:
            store.close()


@settings(max_examples=80, deadline=None)
@given(histories(), st.randoms(use_true_random=False))
def test_final_state_with_reopenings(steps: list[Step], rng: random.Random) -> None:
    """Any interleaving: one row; resolved when Alertmanager said resolved (whatever came
    after), else firing when a firing came after the bridge's last resolution, else resolved;
    the end time is Alertmanager's earliest when it sent one."""
    rng.shuffle(steps)
    row = _play(steps)
    said_resolved = [end for kind, end in steps if kind == "resolved"]
    own = [i for i, (kind, _) in enumerate(steps) if kind in ("infer", "manual")]
    firings = [i for i, (kind, _) in enumerate(steps) if kind == "firing"]
    first_firing = firings[0]
    effective_own = [i for i in own if i > first_firing]  # before any delivery: no alert yet
    if said_resolved:
        assert row[2:4] == ("resolved", T0 + min(said_resolved) * NS)
    elif effective_own and not any(i > effective_own[-1] for i in firings):
        assert row[2] == "resolved"
    else:
        assert row[2:4] == ("firing", None)
    assert row[4] == len(firings) + len(said_resolved)  # every delivery counted once
