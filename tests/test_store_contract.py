"""The store interface's contract, run against every implementation (tests/stores.py): the
episode rules of ingestion whatever the arrival order, operators' and the system's actions
with their audit trail, listing, counts, retention, the feed of changes and its consumers'
positions, and what exports read."""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.errors import Conflict, NotFound, StoreError, Unprocessable
from bridge.core.matchers import Matcher
from bridge.core.policies import Policy, Step
from bridge.core.times import NS
from bridge.store import AlertQuery, AlertStore, AmView, Copy, Escalation, SilenceChange
from bridge.store.columns import RAW_ALERT_SCHEMA, RAW_EVENT_SCHEMA
from bridge.store.query import parse_alert_query
from bridge.store.records import feed_data
from tests.stores import IMPLEMENTATIONS, T0, Sync, received

ALL = AlertQuery(limit=100_000)


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AlertStore]:
    """A new, started store of each implementation."""
    opened = IMPLEMENTATIONS[request.param](tmp_path)
    await opened.start()
    yield opened
    await opened.close()


async def rows(store: AlertStore) -> list[tuple[object, ...]]:
    """(fingerprint, starts_at, status, ends_at, receive_count) of every alert, oldest first."""
    alerts = reversed(await store.list_alerts(ALL))
    return [(a.fingerprint, a.starts_at, a.status, a.ends_at, a.receive_count) for a in alerts]


async def kinds(store: AlertStore, alert_id: int) -> list[str]:
    return [e.kind for e in await store.events(alert_id)]


# --- ingestion: the episode rules ---------------------------------------------------------


async def test_firing_then_resolved(store: AlertStore) -> None:
    """One episode: fired, then resolved with its end time; two events."""
    fired = await store.ingest([received()], T0)
    done = await store.ingest([received("resolved", ends=T0 + 60 * NS)], T0 + 61 * NS)
    assert fired.fired == done.resolved == [1]
    assert await rows(store) == [("0123456789abcdef", T0, "resolved", T0 + 60 * NS, 2)]
    assert await kinds(store, 1) == ["fired", "resolved"]


@pytest.mark.parametrize("exact_first", [True, False], ids=["webhook-first", "api-first"])
async def test_one_episode_whatever_the_precision_of_its_start(
    store: AlertStore, exact_first: bool
) -> None:
    """The webhook's start to the nanosecond and Alertmanager's API's to the millisecond are
    one episode, whichever came first; the most exact start is kept, and the resolution of
    either reaches it."""
    exact, listed = received()._replace(starts_ns=696_746), received()
    first, second = (exact, listed) if exact_first else (listed, exact)
    await store.ingest([first], T0)
    result = await store.ingest([second], T0 + NS)
    assert result.repeats == 1
    (alert,) = await store.list_alerts(ALL)
    assert (alert.starts_at, alert.starts_ns, alert.receive_count) == (T0, 696_746, 2)
    assert alert.to_json()["starts_at"].endswith(".000696746Z")
    done = received("resolved", ends=T0 + 60 * NS)._replace(starts_ns=696_746)
    assert (await store.ingest([done], T0 + 61 * NS)).resolved == [1]


async def test_what_was_clipped_and_a_grafana_alerts_extra_are_kept(store: AlertStore) -> None:
    """`clipped` and `extra` are stored and read back; `extra` follows the alert as it fires
    on (Grafana's values change), as the annotations do."""
    extra = {"dashboardURL": "http://g/d/x", "values": {"B": 1.5}}
    alert = received()._replace(clipped=("labels.instance",), extra=extra)
    await store.ingest([alert], T0)
    stored = await store.get_alert(1)
    assert (stored.clipped, stored.extra) == (("labels.instance",), extra)
    assert stored.to_json()["clipped"] == ["labels.instance"]
    await store.ingest([alert._replace(extra={"values": {"B": 2.0}})], T0 + NS)
    assert (await store.get_alert(1)).extra == {"values": {"B": 2.0}}


async def test_exact_repeat_only_counts(store: AlertStore) -> None:
    """The same (fingerprint, startsAt, status) again is a no-op but for receive_count."""
    await store.ingest([received()], T0)
    result = await store.ingest([received(), received()], T0 + NS)
    assert (result.fired, result.resolved, result.repeats) == ([], [], 2)
    assert await rows(store) == [("0123456789abcdef", T0, "firing", None, 3)]
    assert await kinds(store, 1) == ["fired"]


async def test_stale_firing_never_reopens(store: AlertStore) -> None:
    """A late firing of a resolved episode (HA replica) leaves it resolved."""
    await store.ingest([received(), received("resolved", ends=T0 + 60 * NS)], T0)
    await store.ingest([received()], T0 + 65 * NS)
    assert (await rows(store))[0][2:4] == ("resolved", T0 + 60 * NS)


async def test_new_episode_is_a_new_row(store: AlertStore) -> None:
    """A re-fire has a new startsAt: a second episode with its own id."""
    await store.ingest([received(), received("resolved", ends=T0 + 60 * NS)], T0)
    result = await store.ingest([received(starts=T0 + 120 * NS)], T0 + 121 * NS)
    assert result.fired == [2]
    assert [r[2] for r in await rows(store)] == ["resolved", "firing"]


async def test_old_resolved_never_touches_newer_episode(store: AlertStore) -> None:
    """A stale resolved of the previous episode arriving after a new one fired."""
    await store.ingest([received()], T0)
    await store.ingest([received(starts=T0 + 120 * NS)], T0 + 121 * NS)
    await store.ingest([received("resolved", ends=T0 + 60 * NS)], T0 + 122 * NS)
    assert [(r[1], r[2]) for r in await rows(store)] == [
        (T0, "resolved"), (T0 + 120 * NS, "firing")]  # fmt: skip


async def test_resolved_first_then_firing(store: AlertStore) -> None:
    """Resolved before its firing (reordered): stored resolved, the firing changes nothing."""
    await store.ingest([received("resolved", ends=T0 + 60 * NS)], T0)
    await store.ingest([received()], T0 + NS)
    assert await rows(store) == [("0123456789abcdef", T0, "resolved", T0 + 60 * NS, 2)]
    assert await kinds(store, 1) == ["resolved"]


async def test_earliest_end_wins(store: AlertStore) -> None:
    """Two replicas report slightly different ends: the earliest is kept, in either order."""
    for end in (62, 60, 61):
        await store.ingest([received("resolved", ends=T0 + end * NS)], T0)
    assert (await rows(store))[0][3] == T0 + 60 * NS


async def test_provisional_resolutions_reopen_and_final_ones_do_not(store: AlertStore) -> None:
    """The bridge's own resolutions (inferred, manual) are undone by a firing from
    Alertmanager, with a "reopened" event; a later "resolved" from it makes them final."""
    await store.ingest([received(), received(fingerprint="f" * 16)], T0)
    assert (await store.resolve_inferred(1, T0 + NS, "gone")) is not None
    await store.resolve(2, "alice", "fixed it", T0 + NS)
    result = await store.ingest([received(), received(fingerprint="f" * 16)], T0 + 2 * NS)
    assert sorted(result.reopened) == [1, 2]
    assert [(a.status, a.resolution) for a in await store.get_alerts([1, 2])] == [
        ("firing", None), ("firing", None)]  # fmt: skip
    reopened = (await store.events(1))[-1]
    assert (reopened.kind, reopened.detail) == (
        "reopened",
        "Alertmanager has it firing again after it was resolved by the reconciler",
    )
    await store.resolve_inferred(1, T0 + 3 * NS, "gone")
    await store.ingest([received("resolved", ends=T0 + 3 * NS)], T0 + 4 * NS)
    assert (await store.get_alert(1)).resolution == "alertmanager"
    again = await store.ingest([received()], T0 + 5 * NS)
    assert (again.reopened, again.repeats) == ([], 1)


async def test_the_reconciler_as_actor(store: AlertStore) -> None:
    """Alerts learnt by the reconciler are Alertmanager's, their events its own."""
    await store.ingest([received()], T0, source="alertmanager", actor="reconciler")
    event = (await store.events(1))[0]
    assert (event.kind, event.actor) == ("fired", "reconciler")
    assert (await store.get_alert(1)).source == "alertmanager"


Receipt = tuple[int, str, int]  # (episode index, status, end offset in seconds)


@st.composite
def deliveries(draw: st.DrawFn) -> list[Receipt]:
    """The receipts of a few episodes of one alert, each delivered 1-3 times (HA)."""
    out: list[Receipt] = []
    for index in range(draw(st.integers(min_value=1, max_value=3))):
        resolved = draw(st.booleans()) or index < 2
        out += [(index, "firing", 0)] * draw(st.integers(1, 3))
        if resolved:
            ends = draw(st.lists(st.integers(60, 65), min_size=1, max_size=3))
            out += [(index, "resolved", e) for e in ends]
    return out


def _final(name: str, receipts: list[Receipt], chunks: list[int]) -> list[tuple[object, ...]]:
    """Deliver the receipts in notifications of the given sizes (cycling), as replicas would;
    the rows they end in."""
    alerts = []
    for index, status, end in receipts:
        starts = T0 + index * 1000 * NS
        alerts.append(received(status, starts=starts, ends=starts + end * NS))
    with (
        tempfile.TemporaryDirectory(prefix="order-") as tmp,
        Sync(IMPLEMENTATIONS[name](Path(tmp))) as sync,
    ):
        position, sizes = 0, iter(chunks * (len(alerts) + 1))
        while position < len(alerts):
            size = next(sizes)
            sync(sync.store.ingest(alerts[position : position + size], T0))
            position += size
        return sorted(sync(rows(sync.store)), key=lambda r: (str(r[0]), int(str(r[1]))))


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
@settings(max_examples=60, deadline=None)
@given(
    deliveries(),
    st.randoms(use_true_random=False),
    st.lists(st.integers(1, 6), min_size=1, max_size=4),
)
def test_arrival_order_does_not_change_final_state(
    name: str, receipts: list[Receipt], rng: random.Random, chunks: list[int]
) -> None:
    """Shuffled HA deliveries, one by one or in notifications of several alerts, end in the
    same rows: one per episode, same status, end and receive count."""
    shuffled = receipts[:]
    rng.shuffle(shuffled)
    ordered = _final(name, receipts, [1])
    assert _final(name, shuffled, chunks) == ordered
    assert len(ordered) == len({i for i, _, _ in receipts})
    expected_resolved = {i for i, s, _ in receipts if s == "resolved"}
    assert {i for i, row in enumerate(ordered) if row[2] == "resolved"} == expected_resolved
    assert sum(int(str(row[4])) for row in ordered) == len(receipts)


# --- actions ------------------------------------------------------------------------------


async def test_ack_unack_note_assign_and_their_events(store: AlertStore) -> None:
    """Each action changes the alert and appends an event with its actor."""
    await store.ingest([received()], T0)
    acked = await store.acknowledge(1, "alice", "looking", T0 + NS)
    assert (acked.acknowledged, acked.acked_by, acked.ack_comment, acked.state) == (
        True, "alice", "looking", "acknowledged")  # fmt: skip
    with pytest.raises(Conflict, match="already acknowledged by alice"):
        await store.acknowledge(1, "bob", "", T0 + NS)
    note = await store.add_note(1, "bob", "disk is fine", T0 + 2 * NS)
    assert (note.alert_id, note.kind, note.actor, note.detail) == (1, "note", "bob", "disk is fine")
    snoozed = await store.add_note(1, "bob", "for 1h", T0 + 2 * NS, kind="snoozed")
    assert (snoozed.kind, snoozed.detail) == ("snoozed", "for 1h")
    assert (await store.assign(1, "bob", "carol", T0 + 3 * NS)).assignee == "carol"
    assert (await store.assign(1, "bob", "carol", T0 + 3 * NS)).assignee == "carol"  # no event
    assert (await store.assign(1, "bob", "", T0 + 4 * NS)).assignee is None
    unacked = await store.unacknowledge(1, "alice", "false alarm", T0 + 5 * NS)
    assert unacked.state == "firing"
    with pytest.raises(Conflict, match="not acknowledged"):
        await store.unacknowledge(1, "alice", "", T0)
    assert [(e.kind, e.actor, e.detail) for e in await store.events(1)] == [
        ("fired", "alertmanager", ""),
        ("acknowledged", "alice", "looking"),
        ("note", "bob", "disk is fine"),
        ("snoozed", "bob", "for 1h"),
        ("assigned", "bob", "carol"),
        ("assigned", "bob", ""),
        ("unacknowledged", "alice", "false alarm"),
    ]
    assert await store.people() == {"alice", "bob", "carol"}


async def test_action_errors_change_nothing(store: AlertStore) -> None:
    """Unknown id is NotFound, a resolved alert cannot be acked, bad values are Unprocessable;
    nothing is half-written."""
    with pytest.raises(NotFound, match="no alert with id 7"):
        await store.acknowledge(7, "a", "", T0)
    await store.ingest([received("resolved", ends=T0)], T0)
    with pytest.raises(Conflict, match="resolved"):
        await store.acknowledge(1, "a", "", T0)
    with pytest.raises(Conflict, match="already resolved"):
        await store.resolve(1, "a", "", T0)
    for call, field in [
        (store.acknowledge(1, "", "", T0), "by"),
        (store.add_note(1, "a", "   ", T0), "text"),
        (store.acknowledge(1, "a", 5, T0), "comment"),
        (store.add_note(1, "a", "x" * 10_001, T0), "at most"),
        (store.add_note(1, "a", "x", T0, kind="fired"), "kind"),
    ]:
        with pytest.raises(Unprocessable, match=field):
            await call
    with pytest.raises(NotFound):
        await store.get_alert(2)
    assert await kinds(store, 1) == ["resolved"]


async def test_resolve_by_hand(store: AlertStore) -> None:
    """An operator's resolution ends the episode now, provisionally for Alertmanager's."""
    await store.ingest([received()], T0)
    done = await store.resolve(1, "alice", "", T0 + 5 * NS)
    assert (done.status, done.resolution, done.ends_at) == ("resolved", "manual", T0 + 5 * NS)
    last = (await store.events(1))[-1]
    assert (last.kind, last.actor, last.detail) == ("resolved", "alice", "resolved by hand")


async def test_acks_make_silence_work_only_with_an_alertmanager(store: AlertStore) -> None:
    """With Alertmanagers recorded an ack's silence is pending (silence work); with none,
    "none". Its states then follow set_silence, with their events."""
    await store.ingest([received(), received(fingerprint="f" * 16)], T0)
    assert await store.alertmanagers() is None
    await store.record_alertmanagers(["http://127.0.0.1:9093"])
    assert await store.alertmanagers() == ["http://127.0.0.1:9093"]
    await store.acknowledge(1, "alice", "", T0)
    assert [a.id for a in await store.silence_work()] == [1]
    change = SilenceChange("active", "s-1", T0 + 3600 * NS, ("silenced", "alice", "s-1"))
    active = await store.set_silence(1, T0 + NS, change)
    assert (active.silence_state, active.silence_id, active.silenced_until) == (
        "active", "s-1", T0 + 3600 * NS)  # fmt: skip
    assert (await store.unacknowledge(1, "alice", "", T0 + 2 * NS)).silence_state == "expiring"
    await store.set_silence(1, T0 + 3 * NS, SilenceChange("expired", event=("expired", "x", "")))
    assert await kinds(store, 1) == ["fired", "acknowledged", "silenced", "unacknowledged",
                                     "expired"]  # fmt: skip
    assert (await store.get_alert(1)).silence_id == "s-1"  # kept when not given
    assert await store.silence_work() == []
    await store.record_alertmanagers([])
    assert (await store.acknowledge(2, "bob", "", T0)).silence_state == "none"
    assert await store.silence_work() == []


async def test_alertmanagers_view_and_episode_lookups(store: AlertStore) -> None:
    """set_am_states stores the view of firing alerts only; firing, resolutions and ids_of
    find episodes by source and key."""
    await store.ingest([received(), received(fingerprint="f" * 16)], T0)
    await store.ingest([received(fingerprint="e" * 16)], T0, source="local")
    await store.resolve_inferred(2, T0, "gone")
    views: list[AmView] = [(1, "suppressed", ["s-1"], [("f" * 16, 2)]), (2, "active", [], [])]
    assert await store.set_am_states(views) == 1
    one = await store.get_alert(1)
    assert (one.am_state, one.am_silenced_by, one.am_inhibited_by) == (
        "suppressed", ("s-1",), (("f" * 16, 2),))  # fmt: skip
    assert [a.id for a in await store.firing("alertmanager")] == [1]
    assert [a.id for a in await store.firing("local")] == [3]
    keys = [("0123456789abcdef", T0), ("f" * 16, T0), ("d" * 16, T0)]
    assert await store.resolutions(keys) == {keys[0]: None, keys[1]: "inferred"}
    assert await store.ids_of(keys) == {keys[0]: 1, keys[1]: 2}
    assert await store.resolutions([]) == {}
    assert await store.ids_of([]) == {}


async def test_the_embedded_evaluators_restart_actions(store: AlertStore) -> None:
    """continued adds an event; restart_resolve ends a firing alert, and nothing else."""
    await store.ingest([received()], T0, source="local")
    await store.continued(1, T0 + NS)
    done = await store.restart_resolve(1, T0 + 2 * NS)
    assert done is not None
    assert (done.status, done.resolution) == ("resolved", "restart")
    assert await store.restart_resolve(1, T0 + 3 * NS) is None
    assert await store.resolve_inferred(1, T0 + 3 * NS, "x") is None
    assert await kinds(store, 1) == ["fired", "continued", "resolved"]


# --- reads ----------------------------------------------------------------------------------


async def test_list_filters_and_pagination(store: AlertStore) -> None:
    """status, severity, rule, label matchers, time range, ack and id cursor all narrow."""
    alerts = [
        received(fingerprint=f"{i:016x}", starts=T0 + i * NS, alertname=name, severity=sev,
                 team=team)
        for i, (name, sev, team) in enumerate([
            ("high_cpu", "warning", "infra"), ("critical_cpu", "critical", "infra"),
            ("slow_search", "warning", "search"), ("high_cpu", "warning", "search")])
    ]  # fmt: skip
    # UTF-8 label names (Alertmanager 0.27): a dotted one, and one holding a quote.
    alerts[2] = alerts[2]._replace(labels={**alerts[2].labels, "service.name": "checkout"})
    alerts[1] = alerts[1]._replace(labels={**alerts[1].labels, 'quo"te': "q"})
    await store.ingest(alerts, T0)
    await store.ingest([received("resolved", starts=T0 + 3 * NS, ends=T0 + 9 * NS,
                                 fingerprint=f"{3:016x}")], T0)  # fmt: skip
    await store.acknowledge(1, "a", "", T0)

    async def ids(**kw: Any) -> list[int]:
        return [a.id for a in await store.list_alerts(AlertQuery(**kw))]

    assert await ids() == [4, 3, 2, 1]
    assert await ids(status="firing") == [3, 2, 1]
    assert await ids(severities=("critical",)) == [2]
    assert await ids(rule="high_cpu") == [4, 1]
    assert await ids(matchers=(Matcher.parse('team="search"'),)) == [4, 3]
    assert await ids(matchers=(Matcher.parse('team!="search"'),)) == [2, 1]
    assert await ids(matchers=(Matcher.parse('alertname=~"high.*|slow_search"'),)) == [4, 3, 1]
    assert await ids(matchers=(Matcher.parse('team!~"inf.*"'),)) == [4, 3]
    assert await ids(matchers=(Matcher.parse('absent=""'),)) == [4, 3, 2, 1]
    assert await ids(matchers=(Matcher.parse('"service.name"="checkout"'),)) == [3]
    assert await ids(matchers=(Matcher.parse('service.name=~"check.*"'),)) == [3]
    assert await ids(matchers=(Matcher.parse('"quo\\"te"!="x"'),)) == [4, 3, 2, 1]
    assert await ids(matchers=(Matcher.parse('"quo\\"te"="q"'),)) == [2]
    assert await ids(since=T0 + NS, until=T0 + 3 * NS) == [3, 2]
    assert await ids(acknowledged=True) == [1]
    assert await ids(acknowledged=False, status="firing") == [3, 2]
    assert await ids(limit=2) == [4, 3]
    assert await ids(limit=2, before_id=3) == [2, 1]
    first = await store.list_page(AlertQuery(limit=3))
    assert ([a.id for a in first.alerts], first.next_cursor) == ([4, 3, 2], "2")
    last = await store.list_page(AlertQuery(limit=3, before_id=2))
    assert ([a.id for a in last.alerts], last.next_cursor) == ([1], None)
    assert [a.id for a in await store.get_alerts([3, 99, 1])] == [3, 1]


async def test_attention_order(store: AlertStore) -> None:
    """Firing before resolved; unacknowledged and active first, then suppressed, then
    acknowledged; by severity; newest first; the cursor continues across the parts."""
    specs = [("warning", "firing"), ("critical", "firing"), ("critical", "acked"),
             ("warning", "suppressed"), ("critical", "resolved"), ("info", "firing")]  # fmt: skip
    await store.ingest([received(fingerprint=f"{i:016x}", severity=sev, starts=T0 + i * NS)
                        for i, (sev, _) in enumerate(specs)], T0)  # fmt: skip
    await store.acknowledge(3, "a", "", T0)
    await store.set_am_states([(4, "suppressed", ["s"], [])])
    await store.resolve(5, "a", "", T0)
    order = [a.id for a in await store.list_alerts(AlertQuery(sort="attention"))]
    assert order == [2, 1, 6, 4, 3, 5]
    seen, cursor = [], None
    for _ in range(10):
        page = await store.list_page(_after(cursor, limit=2))
        seen += [a.id for a in page.alerts]
        if (cursor := page.next_cursor) is None:
            break
    assert seen == order


def _after(cursor: str | None, limit: int) -> AlertQuery:
    params = {
        "sort": ["attention"],
        "limit": [str(limit)],
        **({"cursor": [cursor]} if cursor else {}),
    }
    return parse_alert_query(params, T0)


async def test_alert_detail_and_json(store: AlertStore) -> None:
    """An alert with its trail, oldest first; RFC 3339 times and the derived state."""
    await store.ingest([received()], T0)
    await store.add_note(1, "bob", "first", T0 + NS)
    detail = (await store.alert_detail(1)).to_json()
    assert detail["starts_at"] == "2026-11-23T10:00:00Z"
    assert (detail["ends_at"], detail["state"], detail["labels"]["alertname"]) == (
        None, "firing", "high_cpu")  # fmt: skip
    assert [e["kind"] for e in detail["events"]] == ["fired", "note"]
    assert detail["events_truncated"] is False
    with pytest.raises(NotFound):
        await store.alert_detail(2)


operations = st.lists(
    st.tuples(
        st.sampled_from(["fire", "resolve", "ack", "unack", "prune", "batch"]),
        st.integers(0, 5),
        st.sampled_from(["warning", "critical"]),
    ),
    max_size=25,
)


def _scan(alerts: list[Any]) -> dict[tuple[str, str], int]:
    counted: dict[tuple[str, str], int] = {}
    for a in alerts:
        counted[(a.state, a.severity)] = counted.get((a.state, a.severity), 0) + 1
    return counted


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
@settings(max_examples=40, deadline=None)
@given(operations)
def test_counts_equal_a_full_scan(name: str, ops: list[tuple[str, int, str]]) -> None:
    """Whatever happens to alerts, counts() equals counting every alert listed."""
    with (
        tempfile.TemporaryDirectory(prefix="counts-") as tmp,
        Sync(IMPLEMENTATIONS[name](Path(tmp))) as sync,
    ):
        s = sync.store
        for op, i, severity in ops:
            with contextlib.suppress(NotFound, Conflict):
                sync(_operate(s, op, i, severity))
            alerts = sync(s.list_alerts(ALL))
            counts = sync(s.counts())
            assert {k: v for k, v in counts.by_state.items() if v} == _scan(alerts)
            firing: dict[tuple[str, str, str], int] = {}
            for a in alerts:
                if a.status == "firing":
                    key = (a.state, a.severity, "active")
                    firing[key] = firing.get(key, 0) + 1
            assert dict(counts.firing) == firing


async def _operate(s: AlertStore, op: str, i: int, severity: str) -> None:
    fp = f"{i:016x}"
    if op == "fire":
        await s.ingest([received(fingerprint=fp, severity=severity)], T0)
    elif op == "resolve":
        await s.ingest([received("resolved", ends=T0 + NS, fingerprint=fp, severity=severity)], T0)
    elif op == "batch":  # new, known and repeated in one notification
        await s.ingest(
            [received(fingerprint=f"{j:016x}", severity=severity) for j in (i, i + 1, i, 9)], T0
        )
    elif op == "ack":
        await s.acknowledge(i + 1, "a", "", T0)
    elif op == "unack":
        await s.unacknowledge(i + 1, "a", "", T0)
    else:
        await s.set_retention_days(1)
        await s.prune(T0 + 400 * 86400 * NS)


async def test_retention_persists_and_prunes_only_old_resolved(store: AlertStore) -> None:
    """Resolved alerts older than the retention go with their events; firing ones stay."""
    day = 86400 * NS
    await store.ingest([received("resolved", starts=T0, ends=T0 + NS, fingerprint="a" * 16),
                        received("resolved", starts=T0, ends=T0 + 9 * day, fingerprint="b" * 16),
                        received(starts=T0, fingerprint="c" * 16)], T0)  # fmt: skip
    assert await store.retention_days() == 90
    assert await store.set_retention_days(7) == 7
    assert await store.retention_days() == 7
    assert await store.prune(T0 + 10 * day) == 1
    left = await store.list_alerts(ALL)
    assert sorted(a.fingerprint for a in left) == ["b" * 16, "c" * 16]
    assert await store.events(1) == []
    assert await store.prune(T0 + 400 * day) == 1  # b; c is firing and always kept
    assert await store.prune(T0 + 400 * day) == 0
    for bad in (0, -1, True, 1.5):
        with pytest.raises(Unprocessable):
            await store.set_retention_days(bad)  # type: ignore[arg-type]


# --- the feed of changes --------------------------------------------------------------------


async def test_feed_entries_are_the_events_with_their_alerts_as_feed_data(
    store: AlertStore,
) -> None:
    """feed_after's JSON is records.feed_data of the event and its alert, byte for value
    (times with and without fractions, no summary, text with quotes and markup, every
    state); its filter fields are the alert's."""
    plain = received(fingerprint="e" * 16, team='a"b<script>')
    await store.ingest([received(), plain._replace(annotations={})], T0)
    await store.acknowledge(2, "alice", 'say "hi" </script>', T0 + NS)  # a whole second
    await store.assign(2, "alice", "bob", T0 + NS + 1)  # one nanosecond past it
    await store.ingest([received("resolved", ends=T0 + 2 * NS)], T0 + 2 * NS + 120_000)
    entries = await store.feed_after(0)
    events = await store.events_after(0)
    assert [e.id for e in entries] == [e.id for e in events]
    alerts = {a.id: a for a in await store.get_alerts([1, 2])}
    for entry, event in zip(entries, events, strict=True):
        alert = alerts[event.alert_id]
        assert orjson.loads(entry.data) == feed_data(event, alert)
        assert (entry.alert_id, entry.kind, entry.status, entry.severity, entry.alertname,
                entry.acknowledged, entry.labels) == (
            alert.id, event.kind, alert.status, alert.severity, alert.alertname,
            alert.acknowledged, alert.labels)  # fmt: skip
    assert await store.feed_after(entries[1].id, limit=2) == entries[2:4]


async def test_the_feed_is_every_change_in_order_and_resumable(store: AlertStore) -> None:
    """events_after gives every change of every alert, in id order, from any position;
    positions saved by name come back; last_event_id is the newest."""
    assert (await store.last_event_id(), await store.events_after(0)) == (0, [])
    await store.ingest([received(), received(fingerprint="f" * 16)], T0)
    await store.acknowledge(2, "alice", "", T0 + NS)
    await store.ingest([received("resolved", ends=T0 + 2 * NS)], T0 + 2 * NS)
    await store.add_note(1, "bob", "done", T0 + 3 * NS)
    feed = await store.events_after(0)
    assert [(e.alert_id, e.kind) for e in feed] == [
        (1, "fired"),
        (2, "fired"),
        (2, "acknowledged"),
        (1, "resolved"),
        (1, "note"),
    ]
    ids = [e.id for e in feed]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert await store.last_event_id() == ids[-1]
    assert await store.events_after(ids[1], limit=2) == feed[2:4]
    assert await store.events_after(ids[-1]) == []
    assert await store.cursor("notify") is None
    await store.save_cursor("notify", ids[2])
    await store.save_cursor("other", ids[0])
    assert (await store.cursor("notify"), await store.cursor("other")) == (ids[2], ids[0])


async def test_a_follower_misses_nothing_under_concurrent_writes(store: AlertStore) -> None:
    """While many writers commit at once, a consumer that reads after its last id, again and
    again, ends with every event exactly once: an id it has passed never appears later (ids
    are given in commit order, which a consumer's position relies on)."""
    seen: list[int] = []
    done = asyncio.Event()

    async def follow() -> None:
        position = 0
        for _ in range(100_000):  # bounded; ends once the writers are done and all is read
            batch = await store.events_after(position, 7)
            seen.extend(e.id for e in batch)
            if batch:
                position = batch[-1].id
            elif done.is_set():
                return
            else:
                await asyncio.sleep(0)  # a turn for the writers, not a wait for time

    async def write(n: int) -> None:
        result = await store.ingest([received(fingerprint=f"{n:016x}")], T0)
        await store.add_note(result.fired[0], "w", "x", T0)

    follower = asyncio.create_task(follow())
    await asyncio.gather(*(write(n) for n in range(60)))
    done.set()
    await asyncio.wait_for(follower, 30)
    every = [e.id for e in await store.events_after(0, 1000)]
    assert len(every) == 120
    assert seen == every


async def test_changes_wakes_a_waiter_after_a_write(store: AlertStore) -> None:
    """changes() is set once a write made after it committed, and not before."""
    changed = store.changes()
    assert not changed.is_set()
    await store.ingest([received()], T0)
    await asyncio.wait_for(changed.wait(), 5)
    assert (await store.events_after(0))[0].kind == "fired"


async def test_readiness(store: AlertStore) -> None:
    """A started store has no problem; a closed one says so."""
    assert await store.problem() is None
    await store.close()
    assert await store.problem() is not None


# --- exports ----------------------------------------------------------------------------


async def test_what_exports_read(store: AlertStore) -> None:
    """Label sets, people, the kept key (the first kept wins), counts by time, and the raw
    batches of alerts and events in id order, with nulls where nothing is set."""
    await store.ingest([received(team="a"), received(fingerprint="f" * 16, starts=T0 + NS)], T0)
    await store.acknowledge(1, "alice", "on it", T0)
    await store.add_note(2, "bob", "hm", T0 + NS)
    assert sorted(s.get("team", "") for s in await store.label_sets()) == ["", "a"]
    assert await store.people() == {"alice", "bob"}
    assert await store.export_key() is None
    assert await store.export_key("k1") == "k1"
    assert await store.export_key("k2") == "k1"
    assert await store.export_key() == "k1"
    assert await store.kept_key("signing_key") is None  # each key kept apart
    assert await store.kept_key("signing_key", "s1") == "s1"
    assert await store.kept_key("signing_key", "s2") == "s1"
    assert await store.kept_key("export_key") == "k1"
    with pytest.raises(ValueError, match="not a kept key"):
        await store.kept_key("cursor:escalation", "0")
    assert await store.count("alerts", None, None) == 2
    assert await store.count("alerts", T0 + NS, None) == 1
    assert await store.count("events", None, T0 + NS) == 3
    batches = list(store.alert_batches(None, None, 1))
    assert [b.num_rows for b in batches] == [1, 1]
    table = pa.Table.from_batches(batches)
    assert table.schema == RAW_ALERT_SCHEMA
    got = table.select(["id", "acked_by", "ack_comment", "assignee", "note_count",
                        "last_note_at", "ends_at"]).to_pylist()  # fmt: skip
    assert got == [
        {"id": 1, "acked_by": "alice", "ack_comment": "on it", "assignee": None,
         "note_count": 0, "last_note_at": None, "ends_at": None},
        {"id": 2, "acked_by": None, "ack_comment": None, "assignee": None,
         "note_count": 1, "last_note_at": T0 + NS, "ends_at": None},
    ]  # fmt: skip
    events = pa.Table.from_batches(list(store.event_batches(T0 + 1, None, 2)))
    assert events.schema == RAW_EVENT_SCHEMA
    assert events.select(["alert_id", "kind", "actor", "detail"]).to_pylist() == [
        {"alert_id": 2, "kind": "note", "actor": "bob", "detail": "hm"}
    ]


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
async def test_a_read_only_store_reads_and_refuses_writes(name: str, tmp_path: Path) -> None:
    """Opened for reading, a store answers reads and refuses every write with StoreError."""
    writable = IMPLEMENTATIONS[name](tmp_path)
    await writable.start()
    await writable.ingest([received()], T0)
    await writable.close()
    reader = IMPLEMENTATIONS[name](tmp_path, read_only=True)
    await reader.start()
    try:
        assert reader.read_only
        assert [a.id for a in await reader.list_alerts(ALL)] == [1]
        for write in (reader.acknowledge(1, "a", "", T0), reader.ingest([received()], T0),
                      reader.save_cursor("x", 1), reader.export_key("k")):  # fmt: skip
            with pytest.raises(StoreError, match="reading only"):
                await write
    finally:
        await reader.close()


# --- escalation state -------------------------------------------------------------------

POLICY = Policy(
    "standard",
    (Step("notify", ("a",)), Step("wait", wait=60), Step("notify", ("b", "c"))),
    repeat=1,
    ack_timeout=600,
)


def fresh(alert_id: int, due_at: int = T0, policy: Policy = POLICY) -> Escalation:
    return Escalation(alert_id=alert_id, policy=policy, urgency="high", state="running",
                      position=0, repeats=0, round=1, due_at=due_at, level=-1, copies=(),
                      reposted_at=None, version=0, updated_at=T0)  # fmt: skip


async def test_escalations_are_added_once_with_their_policy_copied(store: AlertStore) -> None:
    result = await store.ingest([received()], T0)
    alert_id = result.fired[0]
    assert await store.add_escalations([fresh(alert_id)], ["policy standard (route 1)"], T0) == 1
    assert await store.add_escalations([fresh(alert_id)], ["again"], T0 + NS) == 0
    [stored] = await store.escalations(alert_id)
    assert stored == fresh(alert_id)
    assert stored.policy == POLICY  # the plan round-trips: steps, waits, repeat, ack timeout
    started = [e for e in await store.events(alert_id) if e.kind == "escalation_started"]
    assert [(e.actor, e.detail) for e in started] == [("escalation", "policy standard (route 1)")]
    assert await store.escalations(alert_id + 1000) == []
    with pytest.raises(NotFound):  # an escalation belongs to a stored alert
        await store.add_escalations([fresh(alert_id + 1000)], ["x"], T0)


async def test_due_escalations_in_due_order_and_the_next_due(store: AlertStore) -> None:
    result = await store.ingest([received(fingerprint=f"{n:016x}") for n in range(4)], T0)
    ids = result.fired
    await store.add_escalations(
        [fresh(ids[0], T0 + 30 * NS), fresh(ids[1], T0 + 10 * NS), fresh(ids[2], T0 + 90 * NS)],
        ["x", "y", "z"],
        T0,
    )
    await store.add_escalations([replace(fresh(ids[3], T0), state="exhausted")], ["w"], T0)
    assert await store.next_escalation_due() == T0 + 10 * NS
    due = await store.due_escalations(T0 + 30 * NS)
    assert [e.alert_id for e in due] == [ids[1], ids[0]]
    assert [e.alert_id for e in await store.due_escalations(T0 + 99 * NS, limit=1)] == [ids[1]]


async def test_a_save_from_a_stale_read_is_a_conflict(store: AlertStore) -> None:
    alert_id = (await store.ingest([received()], T0)).fired[0]
    await store.add_escalations([fresh(alert_id)], ["x"], T0)
    [read] = await store.escalations(alert_id)
    copy = Copy(0, 1, T0, ("a",))
    moved = replace(read, position=2, level=0, copies=(copy,), due_at=T0 + 60 * NS)
    saved = await store.save_escalation(moved, [("escalated", "level 0: a")], T0 + NS)
    assert saved.version == read.version + 1
    assert await store.escalations(alert_id) == [replace(saved, updated_at=T0 + NS)]
    with pytest.raises(Conflict):
        await store.save_escalation(replace(read, state="stopped"), [("x", "y")], T0 + 2 * NS)
    [after] = await store.escalations(alert_id)
    assert (after.state, after.copies) == ("running", (copy,))  # the stale save changed nothing
    trail = [(e.kind, e.actor, e.detail) for e in await store.events(alert_id)]
    assert trail[-1] == ("escalated", "escalation", "level 0: a")
    assert ("x", "escalation", "y") not in trail
    by_person = await store.save_escalation(replace(after, state="paused"), [("p", "q")], T0,
                                            actor="alice")  # fmt: skip
    assert (await store.events(alert_id))[-1].actor == "alice"
    assert "alice" in await store.people()
    with pytest.raises(NotFound):
        await store.save_escalation(replace(by_person, alert_id=alert_id + 99), [], T0)


async def test_copy_work_is_copies_to_end_or_to_post_again(store: AlertStore) -> None:
    ids = (await store.ingest([received(fingerprint=f"{n:016x}") for n in range(4)], T0)).fired
    copy = (Copy(0, 1, T0, ("a",)),)
    rows = [
        replace(fresh(ids[0]), copies=copy, reposted_at=T0),  # posted at T0: due again later
        replace(fresh(ids[1]), copies=copy, reposted_at=T0 + 50 * NS),
        replace(fresh(ids[2]), state="acknowledged", copies=copy, reposted_at=T0 + 50 * NS),
        replace(fresh(ids[3]), state="stopped"),  # nothing to end
    ]
    await store.add_escalations(rows, ["a", "b", "c", "d"], T0)
    assert [e.alert_id for e in await store.copy_work(T0)] == [ids[2]]
    assert sorted(e.alert_id for e in await store.copy_work(T0 + NS)) == [ids[0], ids[2]]


async def test_pruning_an_alert_removes_its_escalations(store: AlertStore) -> None:
    alert_id = (await store.ingest([received()], T0)).fired[0]
    await store.add_escalations([fresh(alert_id)], ["x"], T0)
    await store.ingest([received(status="resolved", ends=T0 + NS)], T0 + NS)
    await store.set_retention_days(1)
    assert await store.prune(T0 + 2 * 86400 * NS) == 1
    assert await store.escalations(alert_id) == []


async def test_the_last_heartbeat_is_kept_and_an_older_one_ignored(store: AlertStore) -> None:
    assert await store.last_heartbeat() is None
    await store.record_heartbeat(T0 + 5 * NS)
    await store.record_heartbeat(T0)  # delivered late, out of order
    assert await store.last_heartbeat() == T0 + 5 * NS


async def test_enrichment_is_a_field_of_its_own_and_adds_no_event(store: AlertStore) -> None:
    alert_id = (await store.ingest([received()], T0)).fired[0]
    before = await store.events(alert_id)
    assert await store.set_enrichment({alert_id: {"owner": "dba"}, alert_id + 50: {"x": "y"}}) == 1
    alert = await store.get_alert(alert_id)
    assert alert.enrichment == {"owner": "dba"}
    assert alert.to_json()["enrichment"] == {"owner": "dba"}
    assert "owner" not in alert.labels
    assert await store.events(alert_id) == before


async def test_text_search_finds_summary_description_and_notes(store: AlertStore) -> None:
    one = received(fingerprint="1" * 16)._replace(
        annotations={"summary": "Disk 95% full", "description": "on /var"}
    )
    two = received(fingerprint="2" * 16)._replace(annotations={"summary": "CPU_high"})
    three = received(fingerprint="3" * 16)._replace(annotations={})
    await store.ingest([one, two, three], T0)
    await store.add_note(3, "alice", "Rebooted the DB node", T0 + 1)

    async def ids(text: str) -> list[int]:
        page = await store.list_page(AlertQuery(text=text))
        return sorted(a.id for a in page.alerts)

    assert await ids("disk") == [1]  # any case
    assert await ids("/VAR") == [1]  # the description
    assert await ids("db node") == [3]  # a note
    assert await ids("95%") == [1]  # % and _ are text, not wildcards
    assert await ids("%") == [1]
    assert await ids("U_h") == [2]
    assert await ids("_") == [2]
    assert await ids("nothing like it") == []


# --- leases of background work -------------------------------------------------------------


async def test_a_lease_is_one_holders_until_it_expires_or_is_released(store: AlertStore) -> None:
    term = 15 * NS
    assert await store.lease("background", "a", T0 + term, T0)
    assert not await store.lease("background", "b", T0 + 1 + term, T0 + 1)  # a's until T0+term
    assert await store.lease("background", "a", T0 + 5 * NS + term, T0 + 5 * NS)  # renewed
    assert not await store.lease("background", "b", T0 + 16 * NS + term, T0 + 16 * NS)
    assert await store.lease("other", "b", T0 + term, T0)  # leases are by name
    # a stops renewing: once its term has run out b takes it, and a cannot renew it back
    after = T0 + 5 * NS + term
    assert await store.lease("background", "b", after + term, after)
    assert not await store.lease("background", "a", after + 1 + term, after + 1)
    await store.release("background", "a")  # not a's: nothing happens
    assert not await store.lease("background", "a", after + 2 + term, after + 2)
    await store.release("background", "b")  # b's: free at once
    assert await store.lease("background", "a", after + 3 + term, after + 3)


async def test_a_batch_of_saves_skips_the_stale_and_the_gone(store: AlertStore) -> None:
    ids = (await store.ingest([received(fingerprint=f"{n:016x}") for n in range(2)], T0)).fired
    await store.add_escalations([fresh(i) for i in ids], ["x", "x"], T0)
    first, second = [(await store.escalations(i))[0] for i in ids]
    stale = replace(second, version=second.version + 5)
    gone = replace(first, alert_id=ids[-1] + 99)
    saved = await store.save_escalations(
        [(replace(first, level=0), [("escalated", "level 0")]), (stale, [("no", "no")]),
         (gone, [])], T0 + NS,
    )  # fmt: skip
    assert saved == [first.version + 1, None, None]
    assert (await store.escalations(ids[0]))[0].level == 0
    assert [e.kind for e in await store.events(ids[1])][-1] != "no"
    assert await store.save_escalations([], T0) == []


# --- copying between stores (alertbridge migrate) ------------------------------------------


async def test_a_store_copied_into_another_and_back_holds_the_same_rows(
    store: AlertStore, tmp_path: Path
) -> None:
    """Into the store under test from SQLite, then from it into a new SQLite store: the
    same rows every time (dump and load on both sides)."""
    from bridge.cli.migrate import copy
    from bridge.store.rows import TABLES
    from bridge.store.sqlite.store import SqliteStore

    source = SqliteStore(tmp_path / "source.db")
    await source.start()
    back = SqliteStore(tmp_path / "back.db")
    await back.start()
    try:
        ids = (await source.ingest([received(fingerprint=f"{n:016x}") for n in range(12)],
                                   T0)).fired  # fmt: skip
        await source.add_note(ids[0], "alice", "note", T0 + NS)
        await source.add_escalations([fresh(ids[1])], ["x"], T0)
        await source.save_cursor("notify", 3)
        await copy(source, store, page=5)
        await copy(store, back, page=5)
        for table in TABLES:
            rows = await source.dump(table, None, 1000)
            assert await store.dump(table, None, 1000) == rows, table
            assert await back.dump(table, None, 1000) == rows, table
        assert await store.load("meta", []) == (0, 0)
    finally:
        await source.close()
        await back.close()


# --- the rule set managed while running --------------------------------------------------


async def test_rule_versions_are_kept_in_order_and_a_stale_one_is_refused(
    store: AlertStore,
) -> None:
    """Versions come back as recorded (the whole rule set in each), newest first; a version
    made on one that is no longer the latest is refused and not recorded."""
    from bridge.core.rulebook import RuleVersion

    assert await store.rule_version() is None
    assert await store.rule_history() == []
    first = RuleVersion(1, T0, "config", "seeded", "", ({"name": "high_cpu", "threshold": 85},), "")
    off = {"name": "high_cpu", "threshold": 85, "enabled": False}
    second = RuleVersion(2, T0 + 1, "ann", "disabled", "high_cpu", (off,), "-x\n+y\n")
    await store.add_rule_version(first)
    await store.add_rule_version(second)
    assert await store.rule_version() == second
    assert await store.rule_version(1) == first
    assert await store.rule_version(7) is None
    assert await store.rule_history() == [second, first]
    assert await store.rule_history(1) == [second]
    stale = RuleVersion(2, T0 + 2, "bob", "enabled", "high_cpu", (), "")
    with pytest.raises(Conflict, match="version 2 is the latest, this change was made on ver"):
        await store.add_rule_version(stale)
    assert await store.rule_history() == [second, first]
    assert (await store.rule_version()).rules().get("high_cpu").enabled is False  # type: ignore[union-attr]
