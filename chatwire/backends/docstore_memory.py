"""DocStore in process memory: for tests and throw-away embedded runs (nothing survives a restart)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from chatwire.backends.docstore import StoredDoc


class MemoryDocStore:
    """Entries per document in insertion order; one counter gives every entry a unique, increasing id."""

    def __init__(self) -> None:
        self._docs: dict[str, dict[int, tuple[bytes, bool]]] = {}
        self._seq = itertools.count(1)

    async def append(self, document_id: str, update: bytes) -> int:
        seq = next(self._seq)
        self._docs.setdefault(document_id, {})[seq] = (bytes(update), False)
        return seq

    async def load(self, document_id: str) -> StoredDoc:
        entries = self._docs.get(document_id, {})
        return StoredDoc(
            seqs=list(entries),
            updates=[data for data, _ in entries.values()],
            snapshot_flags=[flag for _, flag in entries.values()],
        )

    async def compact(self, document_id: str, snapshot: bytes, replaces: Sequence[int]) -> int:
        entries = self._docs.setdefault(document_id, {})
        seq = next(self._seq)
        entries[seq] = (bytes(snapshot), True)
        for old in replaces:
            entries.pop(old, None)
        return seq

    async def delete(self, document_id: str) -> None:
        self._docs.pop(document_id, None)
