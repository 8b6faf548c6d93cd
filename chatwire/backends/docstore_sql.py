"""DocStore in the database (`doc_updates`), SQLite or PostgreSQL: the document lives with its note."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select

from chatwire.backends.docstore import StoredDoc
from chatwire.db.engine import Database
from chatwire.db.models import DocUpdate
from chatwire.util import now_ns

# Bound the size of one `IN (...)` list (SQLite allows 32766 parameters, asyncpg 32767).
_DELETE_CHUNK = 5000


class SqlDocStore:
    """One row per update or snapshot; compaction inserts the snapshot and deletes what it replaces in one
    transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def append(self, document_id: str, update: bytes) -> int:
        async with self.db.session() as s:
            row = DocUpdate(
                document_id=document_id, data=bytes(update), is_snapshot=False, created_at=now_ns()
            )
            s.add(row)
            await s.flush()
            return int(row.seq)

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
