"""Connections to one SQLite database: a transaction per write job, per-thread readers, and
the read budget of the server's reads."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from bridge.core.errors import QueryTimeout, StoreError
from bridge.store.sqlite.schema import check_version, connect, migrate, read_only_uri

T = TypeVar("T")
#: A write: a function of a connection, run inside a transaction (Database.run, or the
#: group-commit writer).
Job = Callable[[sqlite3.Connection], T]
_PROGRESS_STEPS = 1000  # SQLite VM steps between checks of a read's budget
_READ_TURN = 0.001  # seconds a long read runs before it pauses as long (see _ReadBudget)


class _ReadBudget:
    """SQLite's progress handler for a read: aborts it past its deadline, and makes a long
    read take turns with the rest of the process.

    A read holding its thread for long (a regex matcher tested on every row of a big store)
    takes the GIL at every row and keeps a core busy; beside it the event loop, with the
    webhook on it, waits for both. So once a read has run for a millisecond it sleeps a
    millisecond, and so on: reads shorter than that never pause, a long one runs at half
    speed, and the webhook's p99 meanwhile stays near its idle figure (bench/hostile.py).
    """

    __slots__ = ("deadline", "exceeded", "turn_ends")

    def __init__(self, seconds: float) -> None:
        now = time.monotonic()
        self.deadline = now + seconds
        self.turn_ends = now + _READ_TURN
        self.exceeded = False

    def __call__(self) -> bool:
        now = time.monotonic()
        if now > self.deadline:
            self.exceeded = True
            return True  # SQLite interrupts the statement
        if now > self.turn_ends:
            time.sleep(_READ_TURN)
            self.turn_ends = time.monotonic() + _READ_TURN
        return False


class Database:
    """An opened, migrated database: synchronous jobs and per-thread read connections.

    >>> import tempfile, os
    >>> db = Database(os.path.join(tempfile.mkdtemp(), "a.db"))
    >>> db.read(lambda c: c.execute("SELECT count(*) FROM alerts").fetchone())
    (0,)
    >>> db.close()
    """

    def __init__(
        self,
        path: str | Path,
        busy_timeout_ms: int = 5000,
        query_timeout: float | None = None,
        read_only: bool = False,
    ) -> None:
        self.path = str(path)
        self.busy_timeout_ms = busy_timeout_ms
        self.query_timeout = query_timeout
        self.read_only = read_only
        self.closed = False
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        #: Reads running on other threads: close() waits for them (closing a connection
        #: under a running statement crashes the process).
        self._reading = 0
        self._idle = threading.Condition(self._lock)
        try:
            conn = self._connection()
            if read_only:
                check_version(conn, self.path)
            else:
                migrate(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from None

    @property
    def uri(self) -> str:
        """What another SQLite client (ADBC) opens to read this database as this store does."""
        return read_only_uri(self.path) if self.read_only else self.path

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, self.busy_timeout_ms, self.read_only)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def new_connection(self) -> sqlite3.Connection:
        """A connection of its own (the writer thread keeps one)."""
        conn = connect(self.path, self.busy_timeout_ms, self.read_only)
        with self._lock:
            self._all.append(conn)
        return conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"storage failed: {exc}") from None

    def run(self, job: Job[T]) -> T:
        """Run a write job in its own transaction on this thread's connection."""
        conn = self._connection()
        with self._errors():
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = job(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read on this thread's connection (WAL: never blocked by the writer).

        With a `query_timeout` (the server's), a read running longer is aborted by SQLite's
        progress handler (QueryTimeout), and a long one takes turns with the event loop, so
        that no filter can hold a thread, or the GIL, for long. Without (the CLI, exports),
        reads run unhindered.
        """
        with self._lock:
            if self.closed:
                raise StoreError("storage is closed")
            self._reading += 1
        try:
            return self._read(fn)
        finally:
            with self._lock:
                self._reading -= 1
                if not self._reading:
                    self._idle.notify_all()

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connection()
        if self.query_timeout is None:
            with self._errors():
                return fn(conn)
        budget = _ReadBudget(self.query_timeout)
        conn.set_progress_handler(budget, _PROGRESS_STEPS)
        try:
            return fn(conn)
        except sqlite3.OperationalError as exc:
            if budget.exceeded and "interrupt" in str(exc):
                raise QueryTimeout(self.query_timeout) from None
            raise StoreError(f"storage failed: {exc}") from None
        except sqlite3.Error as exc:
            raise StoreError(f"storage failed: {exc}") from None
        finally:
            conn.set_progress_handler(None, 0)

    def check_writable(self) -> None:
        """Raise StoreError unless a write can be made (file, directory and journal writable)."""
        conn = self._connection()
        with self._errors():
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("INSERT INTO meta (key, value) VALUES ('write-probe', '')")
            finally:
                conn.execute("ROLLBACK")

    def close(self, wait: float = 30.0) -> None:
        """Close every connection, once the reads under way ended (at most `wait` seconds: a
        server's reads stop at their query timeout)."""
        with self._lock:
            self.closed = True
            self._idle.wait_for(lambda: not self._reading, wait)
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
