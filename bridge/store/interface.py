"""The store interface: every operation on stored alerts, by name. The HTTP layer, the CLI,
the reconciler, the embedded evaluator, the feed's consumers and the exports use nothing
else; an implementation (SQLite today) passes the contract tests (tests/test_store_contract.py)
unchanged.

Every write is durable when its coroutine returns: a caller that answers someone after it
(the webhook's 2xx) may. Every change of an alert also appends an event (the audit trail),
in the same transaction: `events_after` is the ordered, resumable feed of changes.

Errors: NotFound for an unknown alert id, Conflict when the alert's state forbids the
action, Unprocessable for unacceptable values (an empty actor, a text too long), StoreError
when storage fails (retry later), QueryTimeout when a read ran past its budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pyarrow (and numpy) load when an export runs, not in every process
    import pyarrow as pa

from bridge.core.alerts import ReceivedAlert
from bridge.core.rulebook import RuleVersion
from bridge.store.records import (
    AlertCounts,
    AlertDetail,
    AlertQuery,
    AmView,
    EpisodeKey,
    Escalation,
    Event,
    FeedEntry,
    IngestResult,
    Page,
    SilenceChange,
    StoredAlert,
)


class Lifecycle(Protocol):
    """Opening, closing, readiness."""

    #: Whether it was opened for reading only (writes raise StoreError).
    read_only: bool

    async def start(self) -> None:
        """Be ready to write (a writer, a pool). Reads work before."""
        ...

    async def close(self) -> None:
        """Finish what was submitted, then release everything."""
        ...

    async def problem(self) -> str | None:
        """Why the store cannot take writes now (readiness), or None when it can."""
        ...


class Ingestion(Protocol):
    """What arrives (the webhook, the reconciler, the embedded evaluator)."""

    async def ingest(
        self,
        alerts: Sequence[ReceivedAlert],
        received_at: int,
        source: str = "alertmanager",
        actor: str | None = None,
    ) -> IngestResult:
        """Apply received alerts by the episode rules (bridge.ingest.episodes): new episodes,
        resolutions, repeats, reopenings of provisional resolutions. `actor`: who learnt of
        them when not the source itself (the reconciler)."""
        ...


class Reads(Protocol):
    """Alerts, their trail and the feed of changes, read."""

    async def list_page(self, query: AlertQuery) -> Page:
        """A page of alerts in the query's order, at most query.limit, fewer when their text
        passes the page budget (PAGE_CHARS; at least one alert a page)."""
        ...

    async def list_alerts(self, query: AlertQuery) -> list[StoredAlert]:
        """Every alert matching the query (up to query.limit), in its order, no budget."""
        ...

    async def get_alert(self, alert_id: int) -> StoredAlert:
        """One alert; NotFound."""
        ...

    async def get_alerts(self, ids: Sequence[int]) -> list[StoredAlert]:
        """The alerts of these ids that exist, in the order given."""
        ...

    async def alert_detail(self, alert_id: int) -> AlertDetail:
        """One alert with its audit trail, oldest first, cut at the page budget; NotFound."""
        ...

    async def events(self, alert_id: int) -> list[Event]:
        """An alert's whole audit trail, oldest first (an unknown id has none)."""
        ...

    async def events_after(self, after_id: int, limit: int = 500) -> list[Event]:
        """The feed of changes: events with id > after_id, in id order, at most `limit`. An
        event once returned keeps its place: a consumer resumes from the last id it handled."""
        ...

    async def feed_after(self, after_id: int, limit: int = 500) -> list[FeedEntry]:
        """events_after for live watchers: each with what their filters look at and its JSON
        text (records.feed_data's shape) ready to send."""
        ...

    async def last_event_id(self) -> int:
        """The id of the newest event (0 when none)."""
        ...

    def changes(self) -> asyncio.Event:
        """An event set once a write made through this store object after the call has
        committed (writes of other processes are not seen: consumers also poll)."""
        ...

    async def wake_others(self) -> None:
        """Tell the other processes on this store that Alertmanager work is due now (an ack's
        silence, a resolution's expiry): they run `on_wake` callbacks. Never raises (best
        effort: a failure is logged, and the reconciler's rounds catch up). SQLite: nothing
        (the bridge that serves a file wakes its own reconciler)."""
        ...

    async def on_wake(self, callback: Callable[[], None]) -> Callable[[], Awaitable[None]]:
        """Call `callback` at every other process's `wake_others` from now on (and once
        whenever the listening reconnects, as one may have been missed); returns the
        coroutine function that stops listening."""
        ...

    async def counts(self) -> AlertCounts:
        """Stored alerts by state and severity, and the firing ones by Alertmanager's view."""
        ...

    async def silence_work(self) -> list[StoredAlert]:
        """Alerts whose silence needs an action: pending, expiring, or active."""
        ...

    async def firing(self, source: str) -> list[StoredAlert]:
        """Firing episodes of one source (alertmanager, local)."""
        ...

    async def resolutions(self, keys: Sequence[EpisodeKey]) -> dict[EpisodeKey, str | None]:
        """How the stored episodes among `keys` ended (None: still firing)."""
        ...

    async def ids_of(self, keys: Sequence[EpisodeKey]) -> dict[EpisodeKey, int]:
        """The ids of the stored episodes among `keys`."""
        ...

    async def retention_days(self) -> int:
        """How long resolved alerts are kept (DEFAULT_RETENTION_DAYS until set)."""
        ...

    async def alertmanagers(self) -> list[str] | None:
        """The Alertmanagers the server last started with (None: it never started here)."""
        ...


class Actions(Protocol):
    """Operators' actions on an alert (bridge.store.actions decides them)."""

    async def acknowledge(self, alert_id: int, by: object, comment: object, at: int) -> StoredAlert:
        """Acknowledge a firing, unacknowledged alert; an Alertmanager alert's silence becomes
        pending (to create) unless the server runs with no Alertmanager; Conflict otherwise."""
        ...

    async def unacknowledge(
        self, alert_id: int, by: object, comment: object, at: int
    ) -> StoredAlert:
        """Withdraw an acknowledgement (an active silence becomes expiring); Conflict."""
        ...

    async def add_note(
        self, alert_id: int, by: object, text: object, at: int, kind: str = "note"
    ) -> Event:
        """Add a note to an alert's trail (`kind` one of NOTE_KINDS: an operator's note, or
        what the page did in Alertmanager for them, such as a snooze)."""
        ...

    async def assign(self, alert_id: int, by: object, assignee: object, at: int) -> StoredAlert:
        """Set (or with None or "" clear) the assignee; no event when nothing changes."""
        ...

    async def resolve(self, alert_id: int, by: object, comment: object, at: int) -> StoredAlert:
        """An operator resolves a firing alert (resolution "manual": provisional for
        Alertmanager's alerts, reopened by a later firing delivery); Conflict if resolved."""
        ...


class SystemChanges(Protocol):
    """The system's own changes: silences, Alertmanager's view, retention, settings kept."""

    async def resolve_inferred(self, alert_id: int, at: int, how: str) -> StoredAlert | None:
        """The reconciler found a muted alert gone from Alertmanager: resolved, "inferred"
        (provisional). None when it was not firing."""
        ...

    async def restart_resolve(self, alert_id: int, at: int) -> StoredAlert | None:
        """The embedded evaluator, starting, found a firing alert's condition gone."""
        ...

    async def continued(self, alert_id: int, at: int) -> None:
        """The embedded evaluator, starting, took a firing alert of its last run up again."""
        ...

    async def set_silence(self, alert_id: int, at: int, change: SilenceChange) -> StoredAlert:
        """Record the state of an alert's Alertmanager silence (and an event if given)."""
        ...

    async def set_am_states(self, views: Sequence[AmView]) -> int:
        """Store Alertmanager's view of firing alerts; how many rows changed."""
        ...

    async def record_alertmanagers(self, urls: Sequence[str]) -> None:
        """Note the Alertmanagers the server starts with (acks consult it)."""
        ...

    async def set_retention_days(self, days: int) -> int:
        """Persist the retention; Unprocessable unless a whole number >= 1."""
        ...

    async def prune(self, at: int, batch: int = 5000) -> int:
        """Delete up to `batch` resolved alerts (with their events) ended before the
        retention; how many. Firing alerts are never pruned."""
        ...

    async def set_enrichment(self, values: Mapping[int, Mapping[str, str]]) -> int:
        """Set the enrichment fields of alerts by id (no event: they are not a change of the
        alert's state); how many of the ids exist."""
        ...

    async def save_engine_counts(self, counts: Mapping[str, Any]) -> None:
        """Keep the escalation engine's counters (a JSON-ready mapping), for the server's
        metrics when the engine runs in a process of its own."""
        ...

    async def engine_counts(self) -> dict[str, Any]:
        """The counters last kept ({} when none)."""
        ...

    async def record_heartbeat(self, at: int) -> None:
        """The dead man's switch's heartbeat arrived at `at` (durably; an older one is
        ignored)."""
        ...

    async def last_heartbeat(self) -> int | None:
        """When the last heartbeat arrived (None: never)."""
        ...


class Transfer(Protocol):
    """Copying between stores (`alertbridge migrate`; bridge.store.rows.TABLES)."""

    async def dump(self, table: str, after: tuple[Any, ...] | None,
                   limit: int) -> list[tuple[Any, ...]]:  # fmt: skip
        """Up to `limit` rows of `table` (its TABLES columns, as stored) after the key
        `after` (None: from the first), in key order."""
        ...

    async def load(self, table: str, rows: Sequence[tuple[Any, ...]]) -> tuple[int, int]:
        """Insert the rows (as `dump` gives them, ids kept) that are not there yet; (how many
        were inserted, how many of their keys are there now). Durable when it returns."""
        ...


class Leases(Protocol):
    """The background work of several replicas (bridge.workers.leader)."""

    async def lease(self, name: str, holder: str, until: int, at: int,
                    replacing: str | None = None) -> bool:  # fmt: skip
        """Take or renew the lease `name` for `holder` until `until` (ns): True when `holder`
        holds it now (it was free, expired at `at`, already its own, or held by `replacing`,
        a holder known dead); False when another holder's lease runs past `at`. Atomic
        across every process on the store."""
        ...

    async def lease_holder(self, name: str) -> str | None:
        """Who holds (or last held) the lease `name`."""
        ...

    async def release(self, name: str, holder: str) -> None:
        """Give the lease up if `holder` holds it (another may take it at once)."""
        ...


class FeedCursors(Protocol):
    """Where each consumer of the feed is (bridge.feed.consumer)."""

    async def cursor(self, consumer: str) -> int | None:
        """The last event id a consumer of the feed handled (None: it never ran here)."""
        ...

    async def save_cursor(self, consumer: str, event_id: int) -> None:
        """Remember, durably, the last event id a consumer handled."""
        ...


class Escalations(Protocol):
    """Escalations and their steps (bridge.escalation)."""

    async def add_escalations(
        self, escalations: Sequence[Escalation], details: Sequence[str], at: int | None = None
    ) -> int:
        """Add the escalations not there yet (one per episode and policy), each with an
        "escalation_started" event of its detail at `at` (None: at its updated_at); how many
        were new. Idempotent."""
        ...

    async def escalations(self, alert_id: int) -> list[Escalation]:
        """An alert's escalations (none for an unknown id)."""
        ...

    async def due_escalations(self, now: int, limit: int = 500) -> list[Escalation]:
        """Running, paused or acknowledged escalations whose due_at is at or before now,
        earliest first."""
        ...

    async def next_escalation_due(self) -> int | None:
        """The earliest due_at of those (None: nothing is due, ever, as things stand)."""
        ...

    async def copy_work(self, repost_before: int, limit: int = 500) -> list[Escalation]:
        """Escalations with active copies that must be ended (acknowledged, stopped) or
        posted again (last posted before `repost_before`)."""
        ...

    async def save_escalation(
        self,
        escalation: Escalation,
        events: Sequence[tuple[str, str]],
        at: int,
        actor: str = "escalation",
    ) -> Escalation:
        """Store an escalation's new state with its events (kind, detail), if it is still
        at the version it was read at: Conflict otherwise (NotFound if gone). Returns it at
        its new version."""
        ...

    async def save_escalations(
        self,
        items: Sequence[tuple[Escalation, Sequence[tuple[str, str]]]],
        at: int,
        actor: str = "escalation",
    ) -> list[int | None]:
        """Save many as save_escalation does, in one transaction: each one's new version,
        or None where it changed since it was read or is gone (the others are saved)."""
        ...


class Exports(Protocol):
    """What exports read (bridge.export)."""

    async def label_sets(self) -> list[dict[str, str]]:
        """Every distinct label set stored."""
        ...

    async def people(self) -> frozenset[str]:
        """Everyone named anywhere: actors who are not the system, assignees."""
        ...

    async def export_key(self, new: str | None = None) -> str | None:
        """The pseudonym key kept for exports; with `new`, store it first unless one is kept
        already (the kept one wins)."""
        ...

    async def kept_key(self, name: str, new: str | None = None) -> str | None:
        """A key kept in the database (one of records.KEPT_KEYS: the export's pseudonym key,
        the key that signs links); with `new`, store it first unless one is kept already
        (the kept one wins). ValueError for another name."""
        ...

    async def count(self, what: str, since: int | None, until: int | None) -> int:
        """How many alerts (by starts_at) or events (by at) lie in [since, until)."""
        ...

    def alert_batches(
        self, since: int | None, until: int | None, batch: int
    ) -> Iterator[pa.RecordBatch]:
        """The alerts with starts_at in [since, until), in id order, `batch` rows at a time,
        as Arrow batches of RAW_ALERT_SCHEMA (bridge.store.columns), in one consistent
        snapshot. Blocking: iterate it off the event loop."""
        ...

    def event_batches(
        self, since: int | None, until: int | None, batch: int
    ) -> Iterator[pa.RecordBatch]:
        """The events with `at` in [since, until), in id order, as RAW_EVENT_SCHEMA batches."""
        ...


class RuleVersions(Protocol):
    """The rule set managed while running (bridge.core.rulebook), one for every replica."""

    async def rule_version(self, version: int | None = None) -> RuleVersion | None:
        """Version `version` of the rule set (None: the latest); None when there is none."""
        ...

    async def rule_history(self, limit: int = 100) -> list[RuleVersion]:
        """The latest `limit` versions, newest first."""
        ...

    async def add_rule_version(self, version: RuleVersion) -> None:
        """Record `version`, durably; Conflict unless the latest version is the one before
        it (another change came first: it was made on a rule set that is no longer in
        force)."""
        ...


class Intake(Ingestion, Reads, SystemChanges, Protocol):
    """What a source of alerts other than Alertmanager's webhook needs (the embedded
    evaluator, the reconciler, the heartbeat's watchdog): to ingest, to read what is firing,
    and to record what the bridge inferred (resolved, continued, silenced)."""


class AlertStore(
    Lifecycle,
    Ingestion,
    Reads,
    Actions,
    SystemChanges,
    Transfer,
    Leases,
    FeedCursors,
    Escalations,
    Exports,
    RuleVersions,
    Protocol,
):
    """Stored alert episodes, their audit trail and the bridge's persisted settings: every
    role at once, as each implementation provides them. A caller that needs one role is
    typed against that role (the leader against Leases, a feed consumer against Reads and
    FeedCursors), so that what it may do is what its type says."""
