"""`ydoc:*` collaboration through a real server with python-socketio clients: access on every event, identities
from the session, malformed updates refused, saves, leaves, revocation, durability and compaction."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from pycrdt import Doc, Text

from chatwire.config import Settings
from tests.conftest import RunningServer, run_server
from tests.sio import RecordingClient


@pytest.fixture
async def collab_server(settings: Settings) -> AsyncIterator[RunningServer]:
    tuned = settings.model_copy(update={"doc_compact_every": 5, "doc_save_debounce_seconds": 0.2})
    async with run_server(tuned) as running:
        yield running


class Editor:
    """A python-socketio client with a pycrdt Doc that sends its edits as arrays of ints."""

    def __init__(self, server: RunningServer, user: dict[str, Any]) -> None:
        self.server = server
        self.user = user
        self.client = RecordingClient(server.url)
        self.doc: Doc = Doc()
        self.text = self.doc.get("t", type=Text)

    async def connect(self) -> Editor:
        await self.client.connect(self.user["token"])
        return self

    @property
    def sid(self) -> str:
        return self.client.sio.get_sid()  # type: ignore[no-any-return]

    async def join(self, document_id: str, **extra: Any) -> Any:
        return await self.client.call("ydoc:document:join", {"document_id": document_id, **extra})

    async def edit(self, document_id: str, at: int, chunk: str, *, data: Any = None) -> Any:
        before = self.doc.get_state()
        self.text.insert(at, chunk)
        payload: dict[str, Any] = {"document_id": document_id, "update": list(self.doc.get_update(before))}
        if data is not None:
            payload["data"] = data
        return await self.client.call("ydoc:document:update", payload)

    def apply_received(self, document_id: str) -> None:
        for state in self.client.received["ydoc:document:state"]:
            if state["document_id"] == document_id:
                self.doc.apply_update(bytes(state["state"]))
        for update in self.client.received["ydoc:document:update"]:
            if update["document_id"] == document_id:
                self.doc.apply_update(bytes(update["update"]))


async def make_note(
    server: RunningServer, owner: dict[str, Any], *, read: Sequence[str] = (), write: Sequence[str] = ()
) -> str:
    async with server.http(owner["token"]) as http:
        r = await http.post(
            "/api/v1/notes/create",
            json={
                "title": "n",
                "data": {"content": {"md": "", "html": "", "json": None}, "keep": 1},
                "access_control": {"read": {"user_ids": list(read)}, "write": {"user_ids": list(write)}},
            },
        )
        r.raise_for_status()
        return r.json()["id"]  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def two_writers(
    server: RunningServer,
) -> AsyncIterator[tuple[dict[str, Any], dict[str, Any], str, Editor, Editor]]:
    """Ada's note that Bob may write, and a connected (not yet joined) editor for each; both closed after."""
    ada, bob = await server.signup("Ada"), await server.signup("Bob")
    note_id = await make_note(server, ada, write=[bob["id"]])
    a, b = await Editor(server, ada).connect(), await Editor(server, bob).connect()
    try:
        yield ada, bob, f"note:{note_id}", a, b
    finally:
        await a.client.close()
        await b.client.close()


def text_of(state: bytes) -> str:
    doc: Doc = Doc()
    doc.apply_update(state)
    return str(doc.get("t", type=Text))


async def note_data(server: RunningServer, owner: dict[str, Any], note_id: str) -> Any:
    async with server.http(owner["token"]) as http:
        return (await http.get(f"/api/v1/notes/{note_id}")).json()["data"]


async def eventually(predicate: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_join_relay_and_identities_from_the_session(collab_server: RunningServer) -> None:
    server = collab_server
    async with two_writers(server) as (ada, bob, doc_id, a, b):
        ack = await a.join(doc_id, user_id="spoofed", user_name="Mallory", user_color="#FF6B6B")
        assert ack == {"document_id": doc_id, "sessions": 1}
        first = await a.client.wait_for("ydoc:document:state")
        assert first == {"document_id": doc_id, "state": [0, 0], "sessions": [a.sid]}

        await b.join(doc_id, user_id=ada["id"], user_name="Ada (fake)")
        joined = await a.client.wait_for("ydoc:user:joined")
        assert joined == {
            "document_id": doc_id,
            "user_id": bob["id"],
            "user_name": "Bob",
            "user_color": "#000000",
        }
        state = await b.client.wait_for("ydoc:document:state")
        assert sorted(state["sessions"]) == sorted([a.sid, b.sid])

        assert await a.edit(doc_id, 0, "hello") == {"ok": True}
        relayed = await b.client.wait_for("ydoc:document:update")
        assert relayed["user_id"] == ada["id"] and relayed["socket_id"] == a.sid
        assert all(isinstance(x, int) for x in relayed["update"])
        b.apply_received(doc_id)
        assert str(b.text) == "hello"
        await a.client.expect_none("ydoc:document:update", wait=0.2)
        assert text_of(await server.services.collab.state(doc_id)) == "hello"


async def test_reader_cannot_change_and_stranger_cannot_join(collab_server: RunningServer) -> None:
    server = collab_server
    owner, reader, stranger = (
        await server.signup("Owner"),
        await server.signup("Reader"),
        await server.signup("Stranger"),
    )
    note_id = await make_note(server, owner, read=[reader["id"]])
    doc_id = f"note:{note_id}"
    o, r, s = (
        await Editor(server, owner).connect(),
        await Editor(server, reader).connect(),
        await Editor(server, stranger).connect(),
    )
    try:
        await o.join(doc_id)
        assert await o.edit(doc_id, 0, "owner text") == {"ok": True}
        stored_before = await server.services.collab.store.load(doc_id)

        assert (await r.join(doc_id))["sessions"] == 2
        r.apply_received(doc_id)
        assert str(r.text) == "owner text"
        refused = await r.edit(doc_id, 0, "reader was here")
        assert refused["error"]["code"] == "forbidden"
        save_only = await r.client.call(
            "ydoc:document:update", {"document_id": doc_id, "data": {"content": {"md": "reader"}}}
        )
        assert save_only["error"]["code"] == "forbidden"
        # The reader may still show a cursor: awareness needs membership only.
        aware = await r.client.call("ydoc:awareness:update", {"document_id": doc_id, "update": [0]})
        assert aware == {"ok": True}

        denied = await s.join(doc_id)
        assert denied["error"]["code"] == "not_found"
        assert f"doc_{doc_id}" not in await server.services.broker.rooms_of(s.sid)
        assert (await s.edit(doc_id, 0, "x"))["error"]["code"] == "not_found"
        state = await s.client.call("ydoc:document:state", {"document_id": doc_id})
        assert state["error"]["code"] == "not_found"
        # Leaving a document one never joined changes nothing and tells nobody.
        assert await s.client.call("ydoc:document:leave", {"document_id": doc_id}) == {"ok": True}
        await o.client.expect_none("ydoc:user:left", wait=0.1)
        sneaky = await s.client.call("ydoc:awareness:update", {"document_id": doc_id, "update": [0]})
        assert sneaky["error"]["code"] == "not_member"
        assert (await s.join("chat:abc"))["error"]["code"] == "invalid_payload"

        await o.client.expect_none("ydoc:document:update", wait=0.3)
        assert s.client.received["ydoc:document:state"] == []
        stored_after = await server.services.collab.store.load(doc_id)
        assert stored_after.updates == stored_before.updates
        assert text_of(await server.services.collab.state(doc_id)) == "owner text"
        assert (await note_data(server, owner, note_id))["content"]["md"] == ""
    finally:
        for e in (o, r, s):
            await e.client.close()


@pytest.mark.parametrize(
    "bad",
    [[255, 255, 255, 1], [1, 2, 3], [256, 0], [-1], ["a", 1], [1.5], "AAEC", {"0": 1}],
)
async def test_malformed_update_is_refused_and_never_stored(collab_server: RunningServer, bad: Any) -> None:
    server = collab_server
    async with two_writers(server) as (_ada, _bob, doc_id, a, b):
        await a.join(doc_id)
        await b.join(doc_id)
        await a.edit(doc_id, 0, "safe")
        before = await server.services.collab.store.load(doc_id)
        ack = await a.client.call("ydoc:document:update", {"document_id": doc_id, "update": bad})
        assert ack["error"]["code"] == "invalid_payload", ack
        await b.client.wait_for("ydoc:document:update")
        await b.client.expect_none("ydoc:document:update", lambda p: p["update"] == bad, wait=0.2)
        assert len(b.client.received["ydoc:document:update"]) == 1
        assert (await server.services.collab.store.load(doc_id)).updates == before.updates
        # The document still works afterwards.
        assert await a.edit(doc_id, 4, "!") == {"ok": True}
        assert text_of(await server.services.collab.state(doc_id)) == "safe!"


async def test_binary_update_is_accepted_and_relayed_as_ints(collab_server: RunningServer) -> None:
    server = collab_server
    async with two_writers(server) as (_ada, _bob, doc_id, a, b):
        await a.join(doc_id)
        await b.join(doc_id)
        a.text.insert(0, "binary")
        ack = await a.client.call(
            "ydoc:document:update", {"document_id": doc_id, "update": a.doc.get_update()}
        )
        assert ack == {"ok": True}
        relayed = await b.client.wait_for("ydoc:document:update")
        assert isinstance(relayed["update"], list)
        b.apply_received(doc_id)
        assert str(b.text) == "binary"


async def test_update_needs_joining_first(collab_server: RunningServer) -> None:
    server = collab_server
    ada = await server.signup("Ada")
    doc_id = f"note:{await make_note(server, ada)}"
    a = await Editor(server, ada).connect()
    try:
        assert (await a.edit(doc_id, 0, "x"))["error"]["code"] == "not_member"
        empty = await a.client.call("ydoc:document:update", {"document_id": doc_id})
        assert empty["error"]["code"] == "invalid_payload"
        assert (await server.services.collab.store.load(doc_id)).updates == []
    finally:
        await a.client.close()


async def test_content_is_saved_debounced_and_on_leave(settings: Settings) -> None:
    async with run_server(settings.model_copy(update={"doc_save_debounce_seconds": 0.2})) as server:
        ada = await server.signup("Ada")
        note_id = await make_note(server, ada)
        doc_id = f"note:{note_id}"
        a = await Editor(server, ada).connect()
        try:
            await a.join(doc_id)
            for i in range(5):
                ack = await a.client.call(
                    "ydoc:document:update", {"document_id": doc_id, "data": {"content": {"md": f"v{i}"}}}
                )
                assert ack == {"ok": True}

            async def saved() -> bool:
                return (await note_data(server, ada, note_id))["content"] == {"md": "v4"}

            await eventually(saved)
            data = await note_data(server, ada, note_id)
            assert data["keep"] == 1  # other fields of the note's data are kept
        finally:
            await a.client.close()

    slow = settings.model_copy(update={"doc_save_debounce_seconds": 60})
    async with run_server(slow) as server:
        ada = await server.signup("Ada2")
        note_id = await make_note(server, ada)
        doc_id = f"note:{note_id}"
        a = await Editor(server, ada).connect()
        try:
            await a.join(doc_id)
            await a.edit(doc_id, 0, "typed", data={"content": {"md": "typed"}})
            assert (await note_data(server, ada, note_id))["content"]["md"] == ""
            assert await a.client.call("ydoc:document:leave", {"document_id": doc_id}) == {"ok": True}
            assert (await note_data(server, ada, note_id))["content"]["md"] == "typed"
        finally:
            await a.client.close()


def binary_awareness(client_id: int, clock: int, state: Any) -> list[int]:
    from chatwire.services.ywire import write_var_string, write_var_uint

    out = bytearray()
    write_var_uint(1, out)
    write_var_uint(client_id, out)
    write_var_uint(clock, out)
    write_var_string(json.dumps(state), out)
    return list(out)


@pytest.mark.parametrize("form", ["json", "binary"])
async def test_disconnect_announces_leave_and_clears_the_cursor(
    collab_server: RunningServer, form: str
) -> None:
    from chatwire.services.ywire import parse_awareness

    server = collab_server
    async with two_writers(server) as (ada, _bob, doc_id, a, b):
        await a.join(doc_id)
        await b.join(doc_id)
        if form == "json":
            update = list(
                json.dumps({"77": {"user": {"name": "Ada", "id": "x"}, "cursor": {"a": 1}}}).encode()
            )
        else:
            update = binary_awareness(77, 3, {"user": {"name": "Ada"}})
        ack = await a.client.call(
            "ydoc:awareness:update", {"document_id": doc_id, "user_id": "spoofed", "update": update}
        )
        assert ack == {"ok": True}
        relayed = await b.client.wait_for("ydoc:awareness:update")
        assert relayed == {"document_id": doc_id, "user_id": ada["id"], "update": update}

        await a.client.close()
        left = await b.client.wait_for("ydoc:user:left")
        assert left == {"document_id": doc_id, "user_id": ada["id"]}
        clear = await b.client.wait_for("ydoc:awareness:update", lambda p: p["update"] != update)
        parsed = parse_awareness(bytes(clear["update"]))
        assert parsed is not None and parsed.format == form
        assert [(e.client_id, e.removed) for e in parsed.entries] == [(77, form == "binary")]
        if form == "json":
            assert json.loads(bytes(clear["update"])) == {"77": {}}
        else:
            assert parsed.entries[0].clock == 4
        assert server.services.collab.editors(doc_id) == [b.sid]


async def test_revoking_a_grant_removes_the_editor_at_once(collab_server: RunningServer) -> None:
    server = collab_server
    owner, bob = await server.signup("Owner"), await server.signup("Bob")
    note_id = await make_note(server, owner, write=[bob["id"]])
    doc_id = f"note:{note_id}"
    o, b = await Editor(server, owner).connect(), await Editor(server, bob).connect()
    try:
        await o.join(doc_id)
        await b.join(doc_id)
        assert await b.edit(doc_id, 0, "bob ") == {"ok": True}
        async with server.http(owner["token"]) as http:
            r = await http.post(f"/api/v1/notes/{note_id}/access/update", json={"access_control": {}})
            assert r.status_code == 200, r.text
        left = await o.client.wait_for("ydoc:user:left")
        assert left == {"document_id": doc_id, "user_id": bob["id"]}
        assert f"doc_{doc_id}" not in await server.services.broker.rooms_of(b.sid)
        assert server.services.collab.editors(doc_id) == [o.sid]
        assert (await b.edit(doc_id, 0, "still? "))["error"]["code"] == "not_found"
        assert await o.edit(doc_id, 0, "owner ") == {"ok": True}
        await b.client.expect_none("ydoc:document:update", wait=0.2)
    finally:
        await o.client.close()
        await b.client.close()


async def test_state_survives_the_last_leave_and_the_log_is_compacted(collab_server: RunningServer) -> None:
    server = collab_server
    collab = server.services.collab
    ada = await server.signup("Ada")
    note_id = await make_note(server, ada)
    doc_id = f"note:{note_id}"
    a = await Editor(server, ada).connect()
    try:
        await a.join(doc_id)
        for i in range(23):
            assert await a.edit(doc_id, len(str(a.text)), f"{i},") == {"ok": True}
        await collab.compaction_idle(doc_id)
        expected = str(a.text)
        stored = await collab.store.load(doc_id)
        assert any(stored.snapshot_flags)
        assert stored.tail <= 5 and len(stored.updates) < 23
        assert await a.client.call("ydoc:document:leave", {"document_id": doc_id}) == {"ok": True}
        assert not collab.is_open(doc_id)

        a.client.received.clear()
        await a.join(doc_id)
        state = await a.client.wait_for("ydoc:document:state")
        assert text_of(bytes(state["state"])) == expected
        again = await a.client.call("ydoc:document:state", {"document_id": doc_id})
        assert again == {"ok": True}
        assert len(a.client.received["ydoc:document:state"]) == 2

        # An explicit compaction folds the remaining tail too.
        tail = (await collab.store.load(doc_id)).tail
        assert await collab.compact(doc_id) == tail
        folded = await collab.store.load(doc_id)
        assert len(folded.updates) == 1 and folded.tail == 0
        assert text_of(folded.updates[0]) == expected
    finally:
        await a.client.close()


async def test_deleting_the_note_drops_its_document(collab_server: RunningServer) -> None:
    server = collab_server
    ada = await server.signup("Ada")
    note_id = await make_note(server, ada)
    doc_id = f"note:{note_id}"
    a = await Editor(server, ada).connect()
    try:
        await a.join(doc_id)
        await a.edit(doc_id, 0, "bye")
        async with server.http(ada["token"]) as http:
            assert (await http.delete(f"/api/v1/notes/{note_id}/delete")).status_code == 200
        assert not server.services.collab.is_open(doc_id)
        assert (await server.services.collab.store.load(doc_id)).updates == []
        assert (await a.edit(doc_id, 0, "x"))["error"]["code"] == "not_found"
    finally:
        await a.client.close()


async def test_a_sessions_updates_are_stored_in_the_order_sent(collab_server: RunningServer) -> None:
    """Events are handled concurrently by python-socketio; one session's updates must still keep their order."""
    server = collab_server
    async with two_writers(server) as (_ada, _bob, doc_id, a, b):
        await a.join(doc_id)
        await b.join(doc_id)
        sent: list[list[int]] = []
        for i in range(40):
            before = a.doc.get_state()
            a.text.insert(len(str(a.text)), f"{i} ")
            update = list(a.doc.get_update(before))
            sent.append(update)
            await a.client.emit("ydoc:document:update", {"document_id": doc_id, "update": update})

        async def all_relayed() -> bool:
            return len(b.client.received["ydoc:document:update"]) == len(sent)

        await eventually(all_relayed)
        assert [u["update"] for u in b.client.received["ydoc:document:update"]] == sent
        b.apply_received(doc_id)
        assert str(b.text) == str(a.text)


async def test_rest_content_change_resets_an_unedited_document(collab_server: RunningServer) -> None:
    """Replacing the note's data over REST while nobody edits drops the Yjs state, so the next editor rebuilds the
    document from that content instead of overwriting it with an older one; while someone edits, it stays."""
    server = collab_server
    collab = server.services.collab
    ada = await server.signup("Ada")
    note_id = await make_note(server, ada)
    doc_id = f"note:{note_id}"
    a = await Editor(server, ada).connect()
    try:
        await a.join(doc_id)
        await a.edit(doc_id, 0, "draft")
        async with server.http(ada["token"]) as http:
            r = await http.post(
                f"/api/v1/notes/{note_id}/update", json={"data": {"content": {"md": "rest 1"}}}
            )
            assert r.status_code == 200
        assert text_of(await collab.state(doc_id)) == "draft"  # being edited: kept
        await a.client.call("ydoc:document:leave", {"document_id": doc_id})
        async with server.http(ada["token"]) as http:
            r = await http.post(
                f"/api/v1/notes/{note_id}/update", json={"data": {"content": {"md": "rest 2"}}}
            )
            assert r.status_code == 200
            r = await http.post(f"/api/v1/notes/{note_id}/update", json={"title": "only the title"})
            assert r.status_code == 200
        assert (await collab.store.load(doc_id)).updates == []
        a.client.received.clear()
        await a.join(doc_id)
        assert (await a.client.wait_for("ydoc:document:state"))["state"] == [0, 0]
        assert (await note_data(server, ada, note_id))["content"] == {"md": "rest 2"}
    finally:
        await a.client.close()


async def test_many_editors_at_once_are_all_stored_relayed_and_converge(collab_server: RunningServer) -> None:
    """Six editors send updates without waiting for each other (as under load, when the document's updates are
    committed together): every update is acknowledged, every peer receives every other editor's updates, and the
    stored document equals each editor's."""
    server = collab_server
    owner = await server.signup("Owner")
    people = [await server.signup(f"P{i}") for i in range(6)]
    note_id = await make_note(server, owner, write=[p["id"] for p in people])
    doc_id = f"note:{note_id}"
    editors = [await Editor(server, p).connect() for p in people]
    try:
        for e in editors:
            await e.join(doc_id)
            await e.client.wait_for("ydoc:document:state")

        async def write(e: Editor, tag: int) -> list[Any]:
            acks = []
            for i in range(15):
                before = e.doc.get_state()
                e.text.insert(0, f"<{tag}.{i}>")
                update = list(e.doc.get_update(before))
                acks.append(e.client.call("ydoc:document:update", {"document_id": doc_id, "update": update}))
            return list(await asyncio.gather(*acks))

        results = await asyncio.gather(*(write(e, n) for n, e in enumerate(editors)))
        assert all(ack == {"ok": True} for acks in results for ack in acks)

        async def all_relayed() -> bool:
            return all(len(e.client.received["ydoc:document:update"]) == 5 * 15 for e in editors)

        await eventually(all_relayed, timeout=15)
        stored = await server.services.collab.store.load(doc_id)
        doc: Doc = Doc()
        for u in stored.updates:
            doc.apply_update(u)
        expected = str(doc.get("t", type=Text))
        assert sorted(expected.replace(">", ">\n").split()) == sorted(
            f"<{n}.{i}>" for n in range(6) for i in range(15)
        )
        for e in editors:
            e.apply_received(doc_id)
            assert str(e.text) == expected
    finally:
        for e in editors:
            await e.client.close()


async def test_an_update_that_cannot_be_stored_is_refused_and_not_relayed(
    collab_server: RunningServer,
) -> None:
    """The database refuses the write (its table is gone): the sender is told `unavailable` and to send it again,
    the other editor never receives it, and once the store is back a resent update goes through."""
    from sqlalchemy import text as sql

    server = collab_server
    db = server.services.db
    async with two_writers(server) as (ada, _bob, doc_id, a, b):
        await a.join(doc_id)
        await b.join(doc_id)
        assert await a.edit(doc_id, 0, "kept ") == {"ok": True}
        await b.client.wait_for("ydoc:document:update")
        async with db.session() as s:
            await s.execute(sql("ALTER TABLE doc_updates RENAME TO doc_updates_away"))
        before = a.doc.get_state()
        a.text.insert(len(str(a.text)), "lost?")
        failed = list(a.doc.get_update(before))
        ack = await a.client.call("ydoc:document:update", {"document_id": doc_id, "update": failed})
        assert ack["error"]["code"] == "unavailable"
        await b.client.expect_none(
            "ydoc:document:update", wait=0.3, predicate=lambda u: u["update"] == failed
        )
        async with db.session() as s:
            await s.execute(sql("ALTER TABLE doc_updates_away RENAME TO doc_updates"))
        resent = await a.client.call("ydoc:document:update", {"document_id": doc_id, "update": failed})
        assert resent == {"ok": True}
        assert text_of(await server.services.collab.state(doc_id)) == "kept lost?"
        relayed = await b.client.wait_for("ydoc:document:update", lambda u: u["update"] == failed)
        assert relayed["user_id"] == ada["id"]
