"""CollabService without sockets: a broker fake that records emits, a DocStore that can be made to fail, and
the real note service on the test database."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from pycrdt import Doc, Text

from chatwire.backends.broker_memory import MemoryBroker
from chatwire.backends.docstore import StoredDoc
from chatwire.backends.docstore_memory import MemoryDocStore
from chatwire.db.engine import Database
from chatwire.db.models import User
from chatwire.db.repos.notes import NoteRepo
from chatwire.db.repos.users import UserRepo
from chatwire.errors import ChatwireError
from chatwire.services.collab import CollabService, KeyedLocks
from chatwire.services.notes import NoteService
from chatwire.services.rooms import Rooms


class NoSessions:
    async def sids_of(self, user_id: str) -> list[str]:
        return []


class FlakyStore(MemoryDocStore):
    """A memory DocStore whose next `fail` appends raise, as a database that went away would."""

    def __init__(self) -> None:
        super().__init__()
        self.fail = 0
        self.loads = 0

    async def append(self, document_id: str, update: bytes) -> int:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("database went away")
        return await super().append(document_id, update)

    async def load(self, document_id: str) -> StoredDoc:
        self.loads += 1
        return await super().load(document_id)

    async def compact(self, document_id: str, snapshot: bytes, replaces: Sequence[int]) -> int:
        return await super().compact(document_id, snapshot, replaces)


@pytest.fixture
async def setup(db: Database) -> tuple[CollabService, FlakyStore, MemoryBroker, User, str]:
    broker = MemoryBroker()
    notes = NoteService(NoteRepo(db), broker, Rooms(broker, NoSessions()))  # type: ignore[arg-type]
    store = FlakyStore()
    collab = CollabService(store, notes, broker, compact_every=1000, save_debounce=0.05)
    user = await UserRepo(db).create(name="Ada", email="ada@example.com", password_hash=None, role="user")
    note = await notes.create(user, "n", {"content": {"md": ""}}, None, None)
    return collab, store, broker, user, f"note:{note['id']}"


def edit(doc: Doc, text: str) -> bytes:
    before = doc.get_state()
    t = doc.get("t", type=Text)
    t.insert(len(str(t)), text)
    return doc.get_update(before)


async def test_a_failed_store_refuses_the_update_and_the_document_follows_the_store(
    setup: tuple[CollabService, FlakyStore, MemoryBroker, User, str],
) -> None:
    collab, store, broker, user, doc_id = setup
    await collab.join("s1", user, doc_id, None)
    client: Doc = Doc()
    await collab.update("s1", user, doc_id, edit(client, "kept "), None)
    lost = edit(client, "unstored ")
    store.fail = 1
    with pytest.raises(ChatwireError) as refused:
        await collab.update("s1", user, doc_id, lost, None)
    assert refused.value.code.value == "unavailable"
    assert len(broker.events("ydoc:document:update")) == 1  # the refused update was not relayed

    def text(state: bytes) -> str:
        d: Doc = Doc()
        d.apply_update(state)
        return str(d.get("t", type=Text))

    # The live document is rebuilt from the store: it does not claim the update the store lacks...
    loads = store.loads
    await collab.resend_state("s1", user, doc_id)
    assert store.loads == loads + 1
    assert text(bytes(broker.events("ydoc:document:state")[-1]["state"])) == "kept "
    # ...and the client can send it again.
    await collab.update("s1", user, doc_id, lost, None)
    assert text(await collab.state(doc_id)) == "kept unstored "
    assert (await store.load(doc_id)).updates[-1] == lost


async def test_content_saves_are_debounced_into_one_write(
    setup: tuple[CollabService, FlakyStore, MemoryBroker, User, str],
) -> None:
    collab, _store, _broker, user, doc_id = setup
    note_id = doc_id.split(":", 1)[1]
    writes: list[dict[str, Any]] = []
    repo = collab.notes.repo
    original = repo.update

    async def counting_update(nid: str, **values: Any) -> Any:
        writes.append(values)
        return await original(nid, **values)

    repo.update = counting_update  # type: ignore[method-assign]
    await collab.join("s1", user, doc_id, None)
    for i in range(10):
        await collab.update("s1", user, doc_id, None, {"md": f"v{i}"})
    await asyncio.sleep(0.3)
    assert [w["data"]["content"] for w in writes] == [{"md": "v9"}]
    note = await repo.get(note_id)
    assert note is not None and note.data == {"content": {"md": "v9"}}


async def test_a_key_lock_is_shared_while_in_use_and_forgotten_after() -> None:
    """KeyedLocks: one key's holders run one at a time on one lock, and the table keeps only keys in use."""
    locks = KeyedLocks()
    order: list[str] = []
    first_in = asyncio.Event()
    release = asyncio.Event()

    async def holder(name: str, hold_until: asyncio.Event | None) -> None:
        async with locks.hold("k"):
            order.append(f"{name} in")
            first_in.set()
            if hold_until is not None:
                await hold_until.wait()
            order.append(f"{name} out")

    first = asyncio.create_task(holder("a", release))
    await first_in.wait()
    second = asyncio.create_task(holder("b", None))
    await asyncio.sleep(0)
    assert order == ["a in"]  # b waits for a
    async with locks.hold("other"):
        assert len(locks) == 2  # "k" held by a and waited for by b, "other" by us
    assert len(locks) == 1
    release.set()
    await asyncio.gather(first, second)
    assert order == ["a in", "a out", "b in", "b out"]
    assert len(locks) == 0


async def test_opening_locks_go_once_the_documents_are_open_or_left(
    setup: tuple[CollabService, FlakyStore, MemoryBroker, User, str],
) -> None:
    """Every document ever opened used to keep its opening lock until its note was deleted."""
    collab, _store, _broker, user, doc_id = setup
    others = [await collab.notes.create(user, f"n{i}", {"content": {"md": ""}}, None, None) for i in range(3)]
    ids = [doc_id, *(f"note:{n['id']}" for n in others)]
    await asyncio.gather(*(collab.join(f"s{i}", user, d, None) for i, d in enumerate(ids)))
    assert all(collab.is_open(d) for d in ids)
    assert collab.opening_locks() == 0
    await collab.disconnected("s0")
    for i, d in enumerate(ids[1:], 1):
        await collab.leave(f"s{i}", user, d)
    # a REST write of the content takes the same lock, to reset the stored state of a document nobody edits
    await collab.notes.update(others[0]["id"], user, {"data": {"content": {"md": "rest"}}})
    assert collab.opening_locks() == 0


async def test_a_document_stops_growing_at_its_size_limit_and_room_freed_by_compaction_is_usable(
    setup: tuple[CollabService, FlakyStore, MemoryBroker, User, str],
) -> None:
    """A live pycrdt Doc stays in memory while anyone edits it, ~12x its encoded size: `max_doc_bytes` bounds it.

    Without the bound every update is accepted and the document (and the process's memory) grows without end."""
    collab, store, broker, user, doc_id = setup
    collab.max_doc_bytes = 600
    collab.compact_every = 10**9  # compaction only when the test asks for it
    await collab.join("s1", user, doc_id, None)
    client: Doc = Doc()
    accepted = 0
    with pytest.raises(ChatwireError) as refused:
        for i in range(200):
            await collab.update("s1", user, doc_id, edit(client, f"word{i} " * 3), None)
            accepted += 1
    assert refused.value.code.value == "payload_too_large"
    assert 10 < accepted < 200
    stored = await store.load(doc_id)
    assert len(stored.updates) == accepted  # the refused update was neither stored...
    assert len(broker.events("ydoc:document:update")) == accepted  # ...nor relayed
    assert sum(len(u) for u in stored.updates) <= collab.max_doc_bytes

    # Deleting the text and compacting leaves a small garbage-collected state: the document has room again.
    before = client.get_state()
    text = client.get("t", type=Text)
    del text[0 : len(str(text))]
    deletion = client.get_update(before)
    collab.max_doc_bytes += len(deletion)  # room for the deletion itself
    await collab.update("s1", user, doc_id, deletion, None)
    live = collab._docs[doc_id]
    await collab._compact(live)  # what `compact_every` updates start in the background
    assert live.size < collab.max_doc_bytes // 2
    await collab.update("s1", user, doc_id, edit(client, "again"), None)


async def test_a_background_compaction_resets_the_size_to_the_encoded_state(
    setup: tuple[CollabService, FlakyStore, MemoryBroker, User, str],
) -> None:
    collab, _store, _broker, user, doc_id = setup
    collab.compact_every = 5
    await collab.join("s1", user, doc_id, None)
    client: Doc = Doc()
    for i in range(5):
        await collab.update("s1", user, doc_id, edit(client, f"w{i} "), None)
    await collab.compaction_idle(doc_id)
    live = collab._docs[doc_id]
    assert live.size == len(live.doc.get_update())
