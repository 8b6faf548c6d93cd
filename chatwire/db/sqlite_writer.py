"""Direct lanes for hot SQLite writes (and a few hot reads): a whole transaction in one worker thread, one event-loop round trip.

Through SQLAlchemy's async adapter every statement of a transaction is several hops between the event loop and the
driver's thread, each waiting for a turn of the loop; the in-process write lock is held across all of them, so
when the loop is busy one small transaction occupies SQLite's single writer for tens of milliseconds and writers
queue. A function given to `SqliteWriter.run` executes as one transaction on a plain `sqlite3` connection in a
thread of its own: the loop is involved once, when the result comes back. Other writers of the same file are kept
apart by SQLite's own lock (busy timeout), not by the in-process lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

BUSY_TIMEOUT_SECONDS = 30.0


class _Lane:
    """One plain `sqlite3` connection and the one thread that uses it: functions run in submission order."""

    def __init__(self, path: str, thread_name: str) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            conn = self._conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        return conn

    async def close(self) -> None:
        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=False)


class SqliteWriter(_Lane):
    """One connection, one thread: functions run in submission order, each in its own transaction."""

    def __init__(self, path: str) -> None:
        super().__init__(path, "chatwire-sqlite-writer")

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` inside BEGIN IMMEDIATE ... COMMIT (rolled back if it raises)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._transaction, fn)

    def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result


class SqliteReader(_Lane):
    """The same lane for hot one-statement reads (the API key of every server API call): one event-loop round
    trip instead of the async adapter's several, on a connection of its own so reads never queue behind writes.
    In autocommit mode each statement is its own read transaction: it sees every commit made before it, by any
    process (a key revoked by `chatwire keys revoke` is refused on the next call)."""

    def __init__(self, path: str) -> None:
        super().__init__(path, "chatwire-sqlite-reader")

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` outside any explicit transaction."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._read, fn)

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return fn(self._connection())


def sqlite_file(url_database: str | None) -> str | None:
    """The file behind an SQLite URL's database part; None for an in-memory database (not shareable)."""
    if not url_database or url_database == ":memory:" or url_database.startswith("file::memory:"):
        return None
    return url_database
