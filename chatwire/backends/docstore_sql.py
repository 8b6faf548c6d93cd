"""DocStore in the database (`doc_updates`), SQLite or PostgreSQL: the document lives with its note."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence

from sqlalchemy import delete, select

from chatwire.backends.docstore import StoredDoc
from chatwire.db.engine import Database
from chatwire.db.models import DocUpdate
from chatwire.util import now_ns, settle

log = logging.getLogger("chatwire.docstore")

# Bound the size of one `IN (...)` list (SQLite allows 32766 parameters, asyncpg 32767).
_DELETE_CHUNK = 5000
# Most updates written by one group commit (4 parameters a row, far below both databases' limits).
_APPEND_BATCH = 1000

_Pending = tuple[str, bytes, "asyncio.Future[int]"]


class SqlDocStore:
    """One row per update or snapshot; compaction inserts the snapshot and deletes what it replaces in one
    transaction.

    Appends are group-committed: updates that arrive while a write is under way are stored together by the next
    transaction (one multi-row INSERT), and each caller is answered once its row is committed. Under load the
    number of transactions stays flat while the rows per transaction grow, instead of every edit queueing for
    SQLite's single writer (or a PostgreSQL pool connection) on its own.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._queue: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None

    async def append(self, document_id: str, update: bytes) -> int:
        # The write goes on if the caller is cancelled: its outcome must not depend on who still waits.
        return await asyncio.shield(self.append_nowait(document_id, update))

    def append_nowait(self, document_id: str, update: bytes) -> asyncio.Future[int]:
        """Queue the update now (its place in the log is fixed by this call) and return the future of its id,
        resolved once committed. Lets a caller release its own lock before the commit without reordering."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append((document_id, bytes(update), future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_queue(), name="chatwire-docstore-append")
        return future

    async def drain(self) -> None:
        """Wait until every queued append is committed or has failed (shutdown, before the database closes)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def _flush_queue(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:_APPEND_BATCH], self._queue[_APPEND_BATCH:]
            try:
                seqs = await self._insert(batch)
            except Exception as exc:
                if len(batch) == 1:
                    settle(batch[0][2], 0, exc)
                    continue
                # One bad row must not fail the others: store them one by one to tell which failed.
                log.warning("group commit of document updates failed; writing them one by one")
                for entry in batch:
                    try:
                        settle(entry[2], (await self._insert([entry]))[0])
                    except Exception as one_exc:
                        settle(entry[2], 0, one_exc)
                continue
            for (_doc, _data, future), seq in zip(batch, seqs, strict=True):
                settle(future, seq)

    async def _insert(self, batch: list[_Pending]) -> list[int]:
        created = now_ns()
        writer = self.db.sqlite_writer
        if writer is not None:
            rows = [(doc, data, created) for doc, data, _future in batch]
            return await writer.run(lambda conn: _insert_rows(conn, rows))
        async with self.db.session() as s:
            updates = [
                DocUpdate(document_id=doc, data=data, is_snapshot=False, created_at=created)
                for doc, data, _future in batch
            ]
            s.add_all(updates)
            await s.flush()
            return [int(row.seq) for row in updates]

    async def load(self, document_id: str) -> StoredDoc:
        async with self.db.read() as s:
            rows = (
                await s.execute(
                    select(DocUpdate.seq, DocUpdate.data, DocUpdate.is_snapshot)
                    .where(DocUpdate.document_id == document_id)
                    .order_by(DocUpdate.seq)
                )
            ).all()
        return StoredDoc(
            seqs=[int(r.seq) for r in rows],
            updates=[bytes(r.data) for r in rows],
            snapshot_flags=[bool(r.is_snapshot) for r in rows],
        )

    async def compact(self, document_id: str, snapshot: bytes, replaces: Sequence[int]) -> int:
        async with self.db.session() as s:
            row = DocUpdate(
                document_id=document_id, data=bytes(snapshot), is_snapshot=True, created_at=now_ns()
            )
            s.add(row)
            await s.flush()
            old = list(replaces)
            for start in range(0, len(old), _DELETE_CHUNK):
                await s.execute(
                    delete(DocUpdate).where(
                        DocUpdate.document_id == document_id,
                        DocUpdate.seq.in_(old[start : start + _DELETE_CHUNK]),
                    )
                )
            return int(row.seq)

    async def delete(self, document_id: str) -> None:
        async with self.db.session() as s:
            await s.execute(delete(DocUpdate).where(DocUpdate.document_id == document_id))


_INSERT_SQL = (
    f"INSERT INTO {DocUpdate.__tablename__} (document_id, data, is_snapshot, created_at) VALUES (?, ?, 0, ?)"
)


def _insert_rows(conn: sqlite3.Connection, rows: list[tuple[str, bytes, int]]) -> list[int]:
    """Runs in the SQLite writer's thread: one INSERT per update; `seq` is the rowid SQLite assigns."""
    seqs: list[int] = []
    for row in rows:
        seq = conn.execute(_INSERT_SQL, row).lastrowid
        assert seq is not None
        seqs.append(seq)
    return seqs
