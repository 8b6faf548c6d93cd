"""Database engine, sessions and migrations (Alembic, applied at start)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from chatwire.db.sqlite_writer import SqliteReader, SqliteWriter, sqlite_file

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The PostgreSQL advisory lock key held while migrating ("chatwire" in ASCII, as an int64).
MIGRATION_LOCK_KEY = 0x6368617477697265


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at chatwire's migrations, optionally bound to an open connection."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


class Database:
    """Owns the async engine and hands out sessions; the same code serves SQLite and PostgreSQL."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, object] = {"echo": echo}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # SQLite allows one writer at a time; serialising writers in-process avoids "database is locked".
        self.write_lock = asyncio.Lock() if self.is_sqlite else None
        # Hot, simple writes (document updates) bypass the async adapter on SQLite: see sqlite_writer.py.
        path = sqlite_file(self.engine.url.database) if self.is_sqlite else None
        self.sqlite_writer: SqliteWriter | None = SqliteWriter(path) if path is not None else None
        # ...and a hot read (the API key of every server API call) takes one round trip, not several.
        self.sqlite_reader: SqliteReader | None = SqliteReader(path) if path is not None else None

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction, committed on success and rolled back on error."""
        if self.write_lock is not None:
            async with self.write_lock, self._sessions() as s, s.begin():
                yield s
        else:
            async with self._sessions() as s, s.begin():
                yield s

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reads only (no writer lock on SQLite)."""
        async with self._sessions() as s:
            yield s

    async def answers(self) -> bool:
        """Whether the database answers a trivial query now (a failing write tells an outage from bad data)."""
        try:
            async with self.read() as s:
                await s.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    async def migrate(self) -> None:
        """Bring the schema to the newest migration. On PostgreSQL a transaction-scoped advisory lock makes
        processes that start together migrate one after the other (the later ones find nothing to do)."""
        async with self.engine.begin() as conn:
            if not self.is_sqlite:
                await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
            await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "head"))

    async def close(self) -> None:
        if self.sqlite_writer is not None:
            await self.sqlite_writer.close()
        if self.sqlite_reader is not None:
            await self.sqlite_reader.close()
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
