"""The DocStore: the durable Yjs update log of each collaborative document, with compaction.

Invariants every implementation keeps: an acknowledged `append` is durable; `load` returns every entry that is
stored (snapshots and updates, in append order); `compact` atomically stores one snapshot and removes exactly
the entries it names, so entries appended meanwhile (or by another process) are never lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class StoredDoc:
    """What a document's log holds: entry ids (`seqs`), their bytes, and which of them are snapshots."""

    seqs: list[int] = field(default_factory=list)
    updates: list[bytes] = field(default_factory=list)
    snapshot_flags: list[bool] = field(default_factory=list)

    @property
    def tail(self) -> int:
        """The number of plain updates (not snapshots): what compaction would fold away."""
        return sum(1 for flag in self.snapshot_flags if not flag)

    @property
    def nbytes(self) -> int:
        return sum(len(u) for u in self.updates)


class DocStore(Protocol):
    async def append(self, document_id: str, update: bytes) -> int:
        """Store one update durably; returns its entry id (increasing per store)."""
        ...

    async def load(self, document_id: str) -> StoredDoc:
        """Every stored entry of the document, oldest first (empty for an unknown document)."""
        ...

    async def compact(self, document_id: str, snapshot: bytes, replaces: Sequence[int]) -> int:
        """Atomically store `snapshot` and remove the entries `replaces`; returns the snapshot's entry id."""
        ...

    async def delete(self, document_id: str) -> None:
        """Forget the document entirely."""
        ...


@runtime_checkable
class QueuesAppends(Protocol):
    """A DocStore that can fix an update's place in its log at once and commit it later: the collaboration service
    then awaits the commit outside the document's lock (only when it is the document's sole writer). `drain`
    waits for every queued append, before the database closes."""

    def append_nowait(self, document_id: str, update: bytes) -> asyncio.Future[int]: ...

    async def drain(self) -> None: ...
