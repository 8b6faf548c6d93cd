"""Benchmark: a collaborative note after N small edits, with and without compaction, in the same run.

Measures, for each mode, the time to ingest the edits through CollabService (access check, apply, store),
the stored bytes and rows of the document's log, and the time of a cold join (load the log from the database,
rebuild the pycrdt Doc, encode the state the joiner receives). Prints ratios of the two modes.

    .venv/bin/python -m bench.collab_bench [--edits 10000] [--compact-every 200] [--database sqlite|postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from pycrdt import Doc, Text

from chatwire.backends.broker_memory import MemoryBroker
from chatwire.backends.docstore_sql import SqlDocStore
from chatwire.db.engine import Database
from chatwire.db.models import User
from chatwire.db.repos.notes import NoteRepo
from chatwire.db.repos.users import UserRepo
from chatwire.services.collab import CollabService
from chatwire.services.notes import NoteService
from chatwire.services.rooms import Rooms


class NoSessions:
    async def sids_of(self, user_id: str) -> list[str]:
        return []


def make_edits(n: int, seed: int = 1) -> tuple[list[bytes], str]:
    """n small edits as a typist makes them: mostly one-character inserts at a moving cursor, some deletes."""
    rnd = random.Random(seed)
    doc: Doc = Doc(client_id=1_234_567_890)
    text = doc.get("t", type=Text)
    cursor = 0
    length = 0
    updates: list[bytes] = []
    # Each transaction's own update, as a Yjs client's 'update' event carries it.
    subscription = doc.observe(lambda event: updates.append(event.update))
    for _ in range(n):
        if length and rnd.random() < 0.15:
            at = max(0, min(cursor, length) - 1)
            del text[at : at + 1]
            length -= 1
            cursor = at
        else:
            if rnd.random() < 0.05:
                cursor = rnd.randint(0, length)
            text.insert(cursor, rnd.choice("abcdefghijklmnopqrstuvwxyz    .\n"))
            cursor += 1
            length += 1
    doc.unobserve(subscription)
    return updates, str(text)


async def run_mode(db: Database, updates: list[bytes], expected: str, compact_every: int) -> dict[str, float]:
    broker = MemoryBroker(record=False)
    users = UserRepo(db)
    user: User = await users.create(
        name="Bench", email=f"bench-{uuid.uuid4().hex[:8]}@example.com", password_hash="x", role="admin"
    )
    notes = NoteService(NoteRepo(db), broker, Rooms(broker, NoSessions()))  # type: ignore[arg-type]
    store = SqlDocStore(db)
    collab = CollabService(store, notes, broker, compact_every=compact_every, save_debounce=0.5)
    note = await notes.create(user, "bench", None, None, None)
    doc_id = f"note:{note['id']}"
    sid = "bench-sid"
    await collab.join(sid, user, doc_id, None)

    started = time.perf_counter()
    for update in updates:
        await collab.update(sid, user, doc_id, update, None)
    await collab.compaction_idle(doc_id)
    ingest = time.perf_counter() - started
    await collab.leave(sid, user, doc_id)
    assert not collab.is_open(doc_id)

    stored = await store.load(doc_id)
    state = await collab.state(doc_id)  # cold: the document is not open, so this loads it from the log
    check: Doc = Doc()
    check.apply_update(state)
    assert str(check.get("t", type=Text)) == expected, "document differs from the edits"
    return {
        "ingest_s": ingest,
        "edits_per_s": len(updates) / ingest,
        "rows": len(stored.updates),
        "bytes": stored.nbytes,
        "join_ms": await cold_join_ms(collab, doc_id),
        "state_bytes": len(state),
    }


async def fold_tail(db: Database) -> dict[str, float]:
    """The compacted document once its remaining tail is folded as well: the best case of a join."""
    broker = MemoryBroker(record=False)
    notes = NoteService(NoteRepo(db), broker, Rooms(broker, NoSessions()))  # type: ignore[arg-type]
    store = SqlDocStore(db)
    collab = CollabService(store, notes, broker)
    [document_id] = {f"note:{n.id}" for n in await NoteRepo(db).list_for_user("", all_notes=True)}
    await collab.compact(document_id)
    stored = await store.load(document_id)
    state = await collab.state(document_id)
    return {
        "ingest_s": float("nan"),
        "edits_per_s": float("nan"),
        "rows": len(stored.updates),
        "bytes": stored.nbytes,
        "join_ms": await cold_join_ms(collab, document_id),
        "state_bytes": len(state),
    }


async def cold_join_ms(collab: CollabService, doc_id: str) -> float:
    """Median time of building the joiner's state from the store (the document is not open)."""
    times = []
    for _ in range(7):
        started = time.perf_counter()
        await collab.state(doc_id)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


@contextlib.asynccontextmanager
async def database(args: argparse.Namespace, sqlite_path: Path) -> AsyncIterator[str]:
    """A fresh database URL: a new SQLite file, or a new PostgreSQL database dropped afterwards."""
    if args.database == "sqlite":
        yield f"sqlite+aiosqlite:///{sqlite_path}"
        return
    import asyncpg

    base = args.postgres_url.replace("postgresql+asyncpg://", "postgresql://")
    name = f"chatwire_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(base)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield args.postgres_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=10_000)
    parser.add_argument("--compact-every", type=int, default=200)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--postgres-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    updates, expected = make_edits(args.edits)
    print(f"{args.edits} edits, {sum(map(len, updates))} update bytes, final text {len(expected)} chars")
    results: dict[str, dict[str, float]] = {}
    modes = (("no compaction", 10**9), (f"compact every {args.compact_every}", args.compact_every))
    with tempfile.TemporaryDirectory() as tmp:
        for index, (name, every) in enumerate(modes):
            # A database of its own for each mode, so neither inherits the other's file growth or cache.
            async with database(args, Path(tmp) / f"bench{index}.db") as url:
                db = Database(url)
                await db.migrate()
                try:
                    results[name] = await run_mode(db, updates, expected, every)
                    if every == args.compact_every:
                        results["  + tail folded too"] = await fold_tail(db)
                finally:
                    await db.close()

    print(f"database: {args.database}")
    header = (
        f"{'mode':<22}{'ingest s':>10}{'edits/s':>10}{'rows':>8}{'stored B':>11}{'join ms':>10}{'state B':>9}"
    )
    print(header)
    for name, r in results.items():
        ingest = "-" if r["ingest_s"] != r["ingest_s"] else f"{r['ingest_s']:.2f}"
        rate = "-" if r["edits_per_s"] != r["edits_per_s"] else f"{r['edits_per_s']:.0f}"
        print(
            f"{name:<22}{ingest:>10}{rate:>10}{r['rows']:>8.0f}{r['bytes']:>11.0f}"
            f"{r['join_ms']:>10.2f}{r['state_bytes']:>9.0f}"
        )
    plain, compacted, folded = results.values()
    print(
        f"ratios (no compaction / compaction): join time {plain['join_ms'] / compacted['join_ms']:.1f}x, "
        f"stored bytes {plain['bytes'] / compacted['bytes']:.1f}x, rows {plain['rows'] / compacted['rows']:.0f}x, "
        f"ingest rate {compacted['edits_per_s'] / plain['edits_per_s']:.2f}x"
    )
    print(
        f"with the tail folded too: join time {plain['join_ms'] / folded['join_ms']:.1f}x, "
        f"stored bytes {plain['bytes'] / folded['bytes']:.1f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())
