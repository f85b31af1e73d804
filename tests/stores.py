"""The store implementations the contract tests run (each new one is added here), received
alerts to feed them, and a store driven from synchronous test code."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bridge.core.alerts import ReceivedAlert
from bridge.core.times import NS
from bridge.store import AlertStore, StoredAlert
from bridge.store.sqlite.database import Database
from bridge.store.sqlite.ingest import IngestJob
from bridge.store.sqlite.store import SqliteStore

T = TypeVar("T")
T0 = 1_795_428_000 * NS  # 2026-11-23T10:00:00Z


class Opener(Protocol):
    """Opens the store kept in a directory of its own (a new, empty one the first time)."""

    def __call__(self, directory: Path, read_only: bool = False) -> AlertStore: ...


def _sqlite(directory: Path, read_only: bool = False) -> AlertStore:
    return SqliteStore(directory / "alerts.db", read_only=read_only)


def _postgresql(directory: Path, read_only: bool = False) -> AlertStore:
    """A database of the tests' cluster per directory (made at its first open)."""
    from bridge.store.postgres.store import PostgresStore
    from tests.pg import shared

    cluster = shared()
    named = directory / "postgresql-url"
    if not named.exists():
        named.write_text(cluster.new_database())
    return PostgresStore(
        named.read_text(), password_file=cluster.password_file, read_only=read_only
    )


#: Every implementation of the store interface, by name.
IMPLEMENTATIONS: dict[str, Opener] = {"sqlite": _sqlite, "postgresql": _postgresql}


def received(
    status: str = "firing",
    starts: int = T0,
    ends: int | None = None,
    fingerprint: str = "0123456789abcdef",
    **labels: str,
) -> ReceivedAlert:
    """A received alert, as parse_notification returns it."""
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


def sqlite_of(store: AlertStore) -> SqliteStore:
    """The SQLite store behind the interface (tests of its writer, its database)."""
    assert isinstance(store, SqliteStore), type(store)
    return store


def ingest(
    alerts: list[ReceivedAlert], at: int, source: str = "alertmanager", actor: str | None = None
) -> IngestJob:
    """The SQLite job ingesting `alerts` (for tests of the SQLite store's own machinery:
    Database.run, the writer)."""
    return IngestJob(alerts, at, source, actor)


def alert_rows(db: Database) -> list[tuple[object, ...]]:
    """(fingerprint, starts_at, status, ends_at, receive_count) of every row, in id order."""
    return db.read(
        lambda c: c.execute(
            "SELECT fingerprint, starts_at, status, ends_at, receive_count FROM alerts ORDER BY id"
        ).fetchall()
    )


class Sync:
    """A store's coroutines run to completion from synchronous code, on an event loop of
    its own in a thread (started, and the store's writer with it, on construction).

    >>> # s = Sync(SqliteStore(path)); s.ingest([received()], T0); s(some_coroutine)
    """

    def __init__(self, store: AlertStore, timeout: float = 60.0) -> None:
        self.store = store
        self.timeout = timeout
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self(store.start())

    def __call__(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(self.timeout)

    def __getattr__(self, name: str) -> Any:
        """The store's attribute; its coroutine methods run to completion (sync.ingest(...))."""
        attribute = getattr(self.store, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        def run(*args: Any, **kwargs: Any) -> Any:
            return self(attribute(*args, **kwargs))

        return run

    def close(self) -> None:
        if self.loop.is_closed():
            return
        try:
            self(self.store.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(self.timeout)
            self.loop.close()

    def __enter__(self) -> Sync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stored(**fields: object) -> StoredAlert:
    """A StoredAlert as the store would give it (alert 7, firing), `fields` changed."""
    base: dict[str, object] = {
        "id": 7, "fingerprint": "0123456789abcdef", "status": "firing",
        "alertname": "high_cpu", "severity": "warning", "labels": {"alertname": "high_cpu"},
        "annotations": {}, "generator_url": "", "source": "alertmanager", "starts_at": 1,
        "ends_at": None, "first_received_at": 1, "last_received_at": 1, "receive_count": 1,
        "acked_at": None, "acked_by": None, "ack_comment": None, "assignee": None,
        "silence_id": None, "updated_at": 1,
    }  # fmt: skip
    return StoredAlert(**(base | fields))  # type: ignore[arg-type]
