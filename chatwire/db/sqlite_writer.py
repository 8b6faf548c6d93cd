"""A direct lane for hot SQLite work: a whole transaction in one worker thread, one event-loop round trip.

Through SQLAlchemy's async adapter every statement of a transaction is several hops between the event loop and the
driver's thread, each waiting for a turn of the loop; the in-process write lock is held across all of them, so
when the loop is busy one small transaction occupies SQLite's single writer for tens of milliseconds and writers
queue. A function given to `SqliteWriter.run` executes as one transaction on a plain `sqlite3` connection in a
thread of its own: the loop is involved once, when the result comes back. Other writers of the same file are kept
apart by SQLite's own lock (busy timeout), not by the in-process lock. `SqliteWriter.read` does the same for hot
reads, on a second connection and thread (in WAL mode a reader never waits for the writer). `RowCodec` turns a
table's rows into ORM instances and back with the conversions SQLAlchemy's column types apply, so what the lane
reads and writes is what the ORM would.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from sqlalchemy import inspect
from sqlalchemy.engine import Dialect

T = TypeVar("T")
M = TypeVar("M")

BUSY_TIMEOUT_SECONDS = 30.0


class _Lane:
    """One connection, one thread: functions run in submission order."""

    def __init__(self, path: str, name: str) -> None:
        self.path = path
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None

    def connection(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            conn = self._conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def transaction(self, begin: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self.connection()
        conn.execute(begin)
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def close(self) -> None:
        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self.executor, shut)
        self.executor.shutdown(wait=False)


class SqliteWriter:
    """Writes in submission order, each in its own transaction; reads on a connection of their own."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._writes = _Lane(path, "chatwire-sqlite-writer")
        self._reads = _Lane(path, "chatwire-sqlite-reader")

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` inside BEGIN IMMEDIATE ... COMMIT (rolled back if it raises)."""
        lane = self._writes
        return await asyncio.get_running_loop().run_in_executor(
            lane.executor, lane.transaction, "BEGIN IMMEDIATE", fn
        )

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` inside a read transaction (one snapshot for all its statements); `fn` must not
        write."""
        lane = self._reads
        return await asyncio.get_running_loop().run_in_executor(lane.executor, lane.transaction, "BEGIN", fn)

    async def close(self) -> None:
        await self._writes.close()
        await self._reads.close()


class RowCodec(Generic[M]):
    """An ORM table's rows over plain sqlite3: `select` lists every column (`load` makes an instance of a row),
    `insert` stores one (`dump` gives its arguments). Values pass the column types' own bind and result
    processors for `dialect` (JSON text, booleans), and Python-side scalar defaults fill unset attributes."""

    def __init__(self, model: type[M], dialect: Dialect) -> None:
        self.model = model
        mapper: Any = inspect(model)
        attrs = list(mapper.column_attrs)
        self.keys = [a.key for a in attrs]
        columns = [a.columns[0] for a in attrs]
        names = ", ".join(c.name for c in columns)
        table = mapper.local_table.name
        self.select = f"SELECT {names} FROM {table}"
        self.insert = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' for _ in columns)})"
        self._load = [c.type.result_processor(dialect, None) for c in columns]
        self._dump = [c.type.bind_processor(dialect) for c in columns]
        self._defaults = [
            c.default.arg if c.default is not None and c.default.is_scalar else None for c in columns
        ]

    def load(self, row: Sequence[Any]) -> M:
        """An (unsessioned) instance holding a row of `select`."""
        values = {
            key: value if convert is None else convert(value)
            for key, convert, value in zip(self.keys, self._load, row, strict=True)
        }
        return self.model(**values)

    def dump(self, obj: M) -> tuple[Any, ...]:
        """The arguments of `insert` for `obj`; its unset attributes take their column's scalar default, which
        is also set on `obj` (as an ORM flush leaves it)."""
        state = obj.__dict__
        out: list[Any] = []
        for key, convert, default in zip(self.keys, self._dump, self._defaults, strict=True):
            if key in state:
                value = state[key]
            else:
                value = default
                if default is not None:
                    setattr(obj, key, default)
            out.append(value if convert is None else convert(value))
        return tuple(out)


def sqlite_file(url_database: str | None) -> str | None:
    """The file behind an SQLite URL's database part; None for an in-memory database (not shareable)."""
    if not url_database or url_database == ":memory:" or url_database.startswith("file::memory:"):
        return None
    return url_database
