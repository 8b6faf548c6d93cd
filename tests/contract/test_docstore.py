"""One contract for every DocStore: memory, SQLite, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatwire.backends.docstore import DocStore
from chatwire.backends.docstore_memory import MemoryDocStore
from chatwire.backends.docstore_redis import RedisDocStore
from chatwire.backends.docstore_sql import SqlDocStore
from chatwire.db.engine import Database
from tests.conftest import postgres_database
from tests.contract.conftest import REDIS_KINDS, redis_prefix, target_for


@pytest.fixture(params=["memory", "sqlite", "postgres", *REDIS_KINDS])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DocStore]:
    if request.param == "memory":
        yield MemoryDocStore()
        return
    if request.param in REDIS_KINDS:
        target = target_for(request)
        async with redis_prefix(target) as (client, prefix):
            yield RedisDocStore(client, prefix, cluster=target.cluster)
        return
    if request.param == "sqlite":
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'docs.db'}")
        await db.migrate()
        try:
            yield SqlDocStore(db)
        finally:
            await db.close()
        return
    async with postgres_database() as url:
        db = Database(url)
        await db.migrate()
        try:
            yield SqlDocStore(db)
        finally:
            await db.close()


ALL_BYTES = bytes(range(256))


async def test_unknown_document_is_empty(store: DocStore) -> None:
    stored = await store.load("note:nothing")
    assert stored.seqs == [] and stored.updates == [] and stored.tail == 0 and stored.nbytes == 0


async def test_appends_come_back_in_order_byte_exact(store: DocStore) -> None:
    seqs = [await store.append("note:a", bytes([i]) + ALL_BYTES) for i in range(5)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    stored = await store.load("note:a")
    assert stored.seqs == seqs
    assert stored.updates == [bytes([i]) + ALL_BYTES for i in range(5)]
    assert stored.snapshot_flags == [False] * 5 and stored.tail == 5
    assert stored.nbytes == 5 * 257


async def test_documents_are_separate(store: DocStore) -> None:
    await store.append("note:a", b"a1")
    await store.append("note:b", b"b1")
    await store.append("note:a", b"a2")
    assert (await store.load("note:a")).updates == [b"a1", b"a2"]
    assert (await store.load("note:b")).updates == [b"b1"]
    await store.delete("note:a")
    assert (await store.load("note:a")).updates == []
    assert (await store.load("note:b")).updates == [b"b1"]


async def test_compact_replaces_exactly_what_it_names(store: DocStore) -> None:
    for i in range(4):
        await store.append("note:a", f"u{i}".encode())
    seen = await store.load("note:a")
    # An update appended after the compactor read the log must survive the compaction.
    late = await store.append("note:a", b"late")
    snap_seq = await store.compact("note:a", b"snapshot", seen.seqs)
    after = await store.load("note:a")
    assert sorted(zip(after.seqs, after.updates, after.snapshot_flags, strict=True)) == sorted(
        [(late, b"late", False), (snap_seq, b"snapshot", True)]
    )
    assert after.tail == 1


async def test_compactions_that_overlap_lose_nothing(store: DocStore) -> None:
    for i in range(3):
        await store.append("note:a", f"u{i}".encode())
    first = await store.load("note:a")
    await store.append("note:a", b"u3")
    second = await store.load("note:a")
    # The second compactor finishes first; the first one then names rows that are already gone.
    await store.compact("note:a", b"snap-all", second.seqs)
    await store.compact("note:a", b"snap-first", first.seqs)
    after = await store.load("note:a")
    assert sorted(after.updates) == [b"snap-all", b"snap-first"]
    assert after.tail == 0 and all(after.snapshot_flags)


async def test_compact_with_many_entries(store: DocStore) -> None:
    for i in range(1200):
        await store.append("note:big", i.to_bytes(2, "big"))
    seen = await store.load("note:big")
    await store.compact("note:big", b"S", seen.seqs)
    after = await store.load("note:big")
    assert after.updates == [b"S"] and after.snapshot_flags == [True]


async def test_concurrent_appends_are_each_stored_once_in_each_writers_order(store: DocStore) -> None:
    """Many editors at once (as under load, when appends are grouped into one transaction): every update is
    stored exactly once with its own id, and each writer's updates keep the order it appended them in."""

    async def writer(doc: str, name: str) -> list[int]:
        return [await store.append(doc, f"{name}-{i}".encode()) for i in range(20)]

    names = [(f"note:{d}", f"w{d}{w}") for d in range(5) for w in range(8)]
    results = await asyncio.gather(*(writer(doc, name) for doc, name in names))
    all_seqs = [seq for seqs in results for seq in seqs]
    assert len(set(all_seqs)) == len(all_seqs) == 5 * 8 * 20
    for (doc, name), seqs in zip(names, results, strict=True):
        stored = await store.load(doc)
        assert len(stored.updates) == 8 * 20
        by_seq = dict(zip(stored.seqs, stored.updates, strict=True))
        assert [by_seq[seq] for seq in seqs] == [f"{name}-{i}".encode() for i in range(20)]
        mine = [u for u in stored.updates if u.startswith(f"{name}-".encode())]
        assert mine == [f"{name}-{i}".encode() for i in range(20)]


async def test_appends_while_other_documents_compact_and_delete(store: DocStore) -> None:
    """Appends (group-committed; on SQLite from a writer thread of their own) interleaved with compactions and
    deletions of other documents (the ordinary transaction path): nothing fails, nothing is lost."""
    for d in range(4):
        for i in range(30):
            await store.append(f"note:old{d}", f"o{i}".encode())

    async def churn(d: int) -> None:
        seen = await store.load(f"note:old{d}")
        await store.compact(f"note:old{d}", b"S", seen.seqs)
        if d % 2:
            await store.delete(f"note:old{d}")

    async def edits(w: int) -> None:
        for i in range(25):
            await store.append("note:live", f"{w}-{i}".encode())

    await asyncio.gather(*(edits(w) for w in range(8)), *(churn(d) for d in range(4)))
    live = await store.load("note:live")
    assert sorted(live.updates) == sorted(f"{w}-{i}".encode() for w in range(8) for i in range(25))
    for d in range(4):
        assert (await store.load(f"note:old{d}")).updates == ([] if d % 2 else [b"S"])


async def test_sql_store_drains_queued_appends_before_the_database_closes(tmp_path: Path) -> None:
    """Shutdown: updates queued for the group commit are all stored by `drain`, then the database can close."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'drain.db'}")
    await db.migrate()
    store = SqlDocStore(db)
    futures = [store.append_nowait("note:d", f"u{i}".encode()) for i in range(50)]
    await store.drain()
    assert all(f.done() and not f.exception() for f in futures)
    await db.close()
    reopened = Database(f"sqlite+aiosqlite:///{tmp_path / 'drain.db'}")
    try:
        stored = await SqlDocStore(reopened).load("note:d")
        assert stored.updates == [f"u{i}".encode() for i in range(50)]
    finally:
        await reopened.close()
