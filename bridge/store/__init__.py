"""Alert storage: the interface everything else uses (`AlertStore`, `interface.py`), its
records (`records.py`), the listing query (`query.py`), and its two implementations, SQLite
(`sqlite/`, the default) and PostgreSQL (`postgres/`, for several replicas). `open_store`
opens the store a configuration names."""

from __future__ import annotations

from pathlib import Path

from bridge.store.interface import AlertStore
from bridge.store.records import (
    DEFAULT_RETENTION_DAYS,
    MAX_TEXT,
    PAGE_CHARS,
    SYSTEM_ACTORS,
    AlertCounts,
    AlertDetail,
    AlertQuery,
    AmView,
    Copy,
    EpisodeKey,
    Escalation,
    Event,
    FeedEntry,
    IngestResult,
    Page,
    SilenceChange,
    StoredAlert,
)


def is_url(location: str | Path) -> bool:
    """Whether a store location names a database server (postgresql://...), not a file."""
    return str(location).startswith(("postgresql://", "postgres://"))


def exists(location: str | Path) -> bool:
    """Whether there is a store at `location` to open (a server's: assumed, its connection
    says otherwise; a file's: the file)."""
    return is_url(location) or Path(location).exists()


def open_store(
    path: str | Path,
    *,
    query_timeout: float | None = None,
    read_only: bool = False,
    inline_reads: bool = False,
    password_file: str | None = None,
) -> AlertStore:
    """The store in the SQLite database file at `path` (migrated on open unless read-only),
    or, for a `postgresql://` URL, in that PostgreSQL database (migrated at start; its
    password from `password_file` (server.db_password_file), or libpq's PGPASSWORD or
    PGPASSFILE: never in the URL, which is logged). StoreError when it cannot be opened.
    Call `start()` before writing.

    inline_reads: SQLite runs each read on the calling thread, blocking its event loop until
    the read ends, instead of handing it to a thread and back (two wake-ups a read). For a
    process whose loop has nothing else to do meanwhile and whose reads are short (the
    stream worker, bridge.http.fanout: a page of the feed by id); PostgreSQL's reads are
    asynchronous anyway, and it ignores this."""
    name = str(path)
    if is_url(name):
        from bridge.store.postgres.store import PostgresStore

        return PostgresStore(name, password_file=password_file, query_timeout=query_timeout,
                             read_only=read_only)  # fmt: skip
    from bridge.store.sqlite.store import SqliteStore  # the implementation, chosen here only

    return SqliteStore(path, query_timeout=query_timeout, read_only=read_only,
                       inline_reads=inline_reads)  # fmt: skip


__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "MAX_TEXT",
    "PAGE_CHARS",
    "SYSTEM_ACTORS",
    "AlertCounts",
    "AlertDetail",
    "AlertQuery",
    "AlertStore",
    "AmView",
    "Copy",
    "EpisodeKey",
    "Escalation",
    "Event",
    "FeedEntry",
    "IngestResult",
    "Page",
    "SilenceChange",
    "StoredAlert",
    "exists",
    "is_url",
    "open_store",
]
