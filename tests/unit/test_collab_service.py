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
from chatwire.services.collab import CollabService
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
