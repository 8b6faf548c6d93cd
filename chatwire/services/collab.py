"""Collaborative documents (Yjs): one pycrdt Doc per open document, updates checked, stored, then relayed.

For each document the order is: check access, apply to the live Doc (a malformed update is refused here and
never stored), append to the DocStore, relay to the room. One lock per document keeps that order, so what a
joiner receives as state plus what it is relayed afterwards is exactly what was stored. The log is compacted
into a snapshot every `compact_every` updates; the note's content is saved debounced, and on leave.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pycrdt import Doc, get_state, get_update, merge_updates

from chatwire.backends.broker import Broker
from chatwire.backends.docstore import DocStore, QueuesAppends
from chatwire.db.models import User
from chatwire.errors import ChatwireError, ErrorCode, invalid
from chatwire.services.notes import NoteService
from chatwire.services.rooms import doc_room
from chatwire.services.ywire import awareness_removal, parse_awareness, read_var_uint

log = logging.getLogger("chatwire.collab")

STATE_EVENT = "ydoc:document:state"
UPDATE_EVENT = "ydoc:document:update"
AWARENESS_EVENT = "ydoc:awareness:update"
JOINED_EVENT = "ydoc:user:joined"
LEFT_EVENT = "ydoc:user:left"

EMPTY_UPDATE = b"\x00\x00"
# The largest a document may grow (its encoded state, bytes): a live pycrdt Doc holds about 12x its encoded size
# for many small edits (~390 B in memory for a 33 B token insert), and every open document stays in memory while
# anyone edits it, so without a bound one busy note could take the process's memory (CHATWIRE_DOC_MAX_BYTES).
DEFAULT_MAX_DOC_BYTES = 4 * 2**20
# A steady stream of edits still saves the content at least this many debounce periods after the first one.
SAVE_MAX_DELAY_FACTOR = 10


def note_id_of(document_id: str) -> str:
    """The note behind a document id `note:{note_id}`; any other kind of document is refused."""
    kind, sep, note_id = document_id.partition(":")
    if kind != "note" or not sep or not note_id:
        raise invalid("unknown document id; expected note:{note_id}")
    return note_id


def build_snapshot(updates: list[bytes]) -> bytes:
    """One update equivalent to all of `updates`, as small as can be had without losing anything.

    A fresh Doc's encoded state is the compact form (deleted content garbage-collected) but leaves out updates
    whose dependencies never arrived (pycrdt keeps them pending and does not encode them); when the raw merge
    holds any struct the compact form lacks, the lossless merge is used instead.
    """
    merged = merge_updates(*updates) if len(updates) > 1 else updates[0]
    doc: Doc = Doc()
    for update in updates:
        apply_update(doc, update)
    compact = doc.get_update()
    missing = get_update(merged, get_state(compact))
    if read_var_uint(missing, 0)[0] == 0:
        return compact
    return merged


def apply_update(doc: Doc, update: bytes) -> None:
    """Apply a Yjs update; any failure of pycrdt (including a Rust panic) becomes a ValueError."""
    try:
        doc.apply_update(update)
    except Exception as exc:
        raise ValueError(str(exc)) from None
    except BaseException as exc:
        # pyo3 turns a Rust panic into PanicException, which derives from BaseException.
        if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
            raise
        raise ValueError(f"update rejected by pycrdt: {exc}") from None


class _KeyLock:
    """A key's lock and how many hold it or wait for it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class KeyedLocks:
    """One asyncio lock per key, kept only while someone holds it or waits for it: a key's entry goes when its last
    user leaves, so the table is as large as the keys in use now, not every key ever locked. Everyone who arrives
    while the entry exists shares its lock, so no two holders of one key ever use different locks."""

    def __init__(self) -> None:
        self._entries: dict[str, _KeyLock] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _KeyLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if not entry.users and self._entries.get(key) is entry:
                del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class Editor:
    """One session editing a document, and the awareness clients it announced (to clear them when it goes)."""

    sid: str
    user_id: str
    user_name: str
    color: str
    awareness_format: Literal["binary", "json"] | None = None
    awareness_clients: dict[int, int] = field(default_factory=dict)


@dataclass
class PendingSave:
    content: Any
    user: User
    first_at: float
    last_at: float


class LiveDoc:
    """A loaded document: its Doc, its editors on this process, and its background save and compaction."""

    def __init__(self, document_id: str, doc: Doc, tail: int, size: int = 0) -> None:
        self.document_id = document_id
        self.room = doc_room(document_id)
        self.doc = doc
        self.tail = tail
        # The document's size for `max_doc_bytes`: the stored bytes it was built from, plus each update applied
        # since (an upper bound: merging only shrinks), set to the exact encoded state after each compaction.
        self.size = size
        self.lock = asyncio.Lock()
        self.save_lock = asyncio.Lock()
        self.editors: dict[str, Editor] = {}
        self.stale = False
        self.pending: PendingSave | None = None
        self.save_task: asyncio.Task[None] | None = None
        self.compact_task: asyncio.Task[None] | None = None


class CollabService:
    """The `ydoc:*` events' logic; talks to clients only through the Broker."""

    def __init__(
        self,
        store: DocStore,
        notes: NoteService,
        broker: Broker,
        *,
        compact_every: int = 200,
        save_debounce: float = 0.5,
        shared: bool = False,
        max_doc_bytes: int = DEFAULT_MAX_DOC_BYTES,
    ) -> None:
        self.store = store
        # Updates that would take a document past this size are refused (0 = no limit): see DEFAULT_MAX_DOC_BYTES.
        self.max_doc_bytes = max_doc_bytes
        # In a fleet other processes append to the same store: a joiner's state is then read from the store
        # (snapshot + bounded tail), not from this process's copy, which lacks their updates.
        self.shared = shared
        # A store that can queue an append at once lets an update's commit be awaited outside its document's lock;
        # only when this process is the document's sole writer (not in a fleet).
        self._append_nowait: Callable[[str, bytes], asyncio.Future[int]] | None = (
            store.append_nowait if isinstance(store, QueuesAppends) and not shared else None
        )
        self.notes = notes
        self.broker = broker
        self.compact_every = compact_every
        self.save_debounce = save_debounce
        self._docs: dict[str, LiveDoc] = {}
        self._opening = KeyedLocks()
        self._by_sid: dict[str, set[str]] = {}
        self._session_locks: dict[str, asyncio.Lock] = {}
        notes.access_lost_hooks.append(self._on_access_lost)
        notes.deleted_hooks.append(self._on_note_deleted)
        notes.content_replaced_hooks.append(self._on_content_replaced)

    # events

    def in_order(self, sid: str) -> asyncio.Lock:
        """The lock that keeps one session's `ydoc:*` events in arrival order.

        python-socketio runs every incoming event in its own task, so two updates of one client can reach the
        store in the wrong order, and Yjs updates whose dependencies come later are held as pending (pycrdt
        mishandles some of those). Each event takes this lock before its first await: tasks start in arrival
        order and asyncio's lock is first-come first-served, so the events of a session run one after another.
        """
        lock = self._session_locks.get(sid)
        if lock is None:
            lock = self._session_locks[sid] = asyncio.Lock()
        return lock

    async def join(self, sid: str, user: User, document_id: str, color: str | None) -> dict[str, Any]:
        """Read access required; enter the room, send the state to the joiner, tell the others."""
        await self.notes.require(note_id_of(document_id), user, "read")
        async with self._locked(document_id, create=True, fresh=True) as live:
            assert live is not None
            previous = live.editors.get(sid)
            editor = Editor(sid, user.id, user.name, color or "#000000")
            if previous is not None:
                editor.awareness_format = previous.awareness_format
                editor.awareness_clients = previous.awareness_clients
            live.editors[sid] = editor
            self._by_sid.setdefault(sid, set()).add(document_id)
            await self.broker.enter_room(sid, live.room)
            sessions = await self._send_state(live, sid)
            await self.broker.emit(
                JOINED_EVENT,
                {
                    "document_id": document_id,
                    "user_id": user.id,
                    "user_name": user.name,
                    "user_color": editor.color,
                },
                room=live.room,
                skip_sid=sid,
            )
        return {"document_id": document_id, "sessions": len(sessions)}

    async def resend_state(self, sid: str, user: User, document_id: str) -> dict[str, Any]:
        """Send the full state again to a session already editing the document."""
        await self.notes.require(note_id_of(document_id), user, "read")
        async with self._locked(document_id, create=False, fresh=True) as live:
            live = await self._require_editor(live, sid, document_id)
            await self._send_state(live, sid)
        return {"ok": True}

    async def update(
        self, sid: str, user: User, document_id: str, update: bytes | None, content: Any | None
    ) -> dict[str, Any]:
        """Write access and membership required: apply, store, relay `update`; schedule a save of `content`."""
        note_id = note_id_of(document_id)
        if update is None and content is None:
            raise invalid("send an update, data.content, or both")
        await self.notes.require(note_id, user, "write")
        committing: asyncio.Future[int] | None = None
        async with self._locked(document_id, create=False) as live:
            live = await self._require_editor(live, sid, document_id)
            if update is not None and update != EMPTY_UPDATE:
                self._check_size(live, update)
                self._apply(live, update)
                live.size += len(update)
                committing = self._queue_append(live, update)
                if committing is None:
                    await self._store(live, update)
                    await self._relay(live, user, sid, update)
            if content is not None:
                self._schedule_save(live, user, content)
        if committing is not None and update is not None:
            # The update's place in the log was fixed under the lock; its commit is awaited without it, so the
            # other editors' updates join the same group commit instead of queueing one by one behind it.
            await self._committed(live, committing)
            await self._relay(live, user, sid, update)
        return {"ok": True}

    async def _relay(self, live: LiveDoc, user: User, sid: str, update: bytes) -> None:
        """Send a stored update to the document's other editors; start a compaction when the tail is long."""
        await self.broker.emit(
            UPDATE_EVENT,
            {"document_id": live.document_id, "user_id": user.id, "update": list(update), "socket_id": sid},
            room=live.room,
            skip_sid=sid,
        )
        if live.tail >= self.compact_every and (live.compact_task is None or live.compact_task.done()):
            live.compact_task = asyncio.create_task(self._compact(live), name="chatwire-doc-compact")

    async def awareness(self, sid: str, user: User, document_id: str, update: bytes) -> dict[str, Any]:
        """Room members only: remember which awareness clients the session owns, relay with the real user id."""
        note_id_of(document_id)
        async with self._locked(document_id, create=False) as live:
            live = await self._require_editor(live, sid, document_id)
            editor = live.editors[sid]
            parsed = parse_awareness(update)
            if parsed is not None:
                editor.awareness_format = parsed.format
                for entry in parsed.entries:
                    if entry.removed:
                        editor.awareness_clients.pop(entry.client_id, None)
                    else:
                        editor.awareness_clients[entry.client_id] = entry.clock
            await self.broker.emit(
                AWARENESS_EVENT,
                {"document_id": document_id, "user_id": user.id, "update": list(update)},
                room=live.room,
                skip_sid=sid,
            )
        return {"ok": True}

    async def leave(self, sid: str, user: User, document_id: str) -> dict[str, Any]:
        """Leave the room; the others get `ydoc:user:left` and the cursor cleared; pending content is saved."""
        note_id_of(document_id)
        async with self._locked(document_id, create=False) as live:
            if live is None or sid not in live.editors:
                await self.broker.leave_room(sid, doc_room(document_id))
                return {"ok": True}
            await self._forget(live, sid)
            await self._flush(live)
        await self._evict_if_idle(document_id)
        return {"ok": True}

    async def disconnected(self, sid: str) -> None:
        """A session went away: leave every document it was editing, as `leave` would.

        Runs after the session's events already under way (same ordering lock), so a join that was in flight
        cannot leave a ghost editor behind; later events of the session fail for want of a user.
        """
        async with self.in_order(sid):
            for document_id in sorted(self._by_sid.pop(sid, set())):
                async with self._locked(document_id, create=False) as live:
                    if live is None or sid not in live.editors:
                        continue
                    await self._forget(live, sid, leave_room=False)
                    await self._flush(live)
                await self._evict_if_idle(document_id)
        self._session_locks.pop(sid, None)

    # queries

    async def state(self, document_id: str) -> bytes:
        """The document's full state as one Yjs update (from memory when open, else from the store)."""
        live = self._docs.get(document_id)
        if live is not None and not live.stale:
            return live.doc.get_update()
        doc, _, _ = await self._load(document_id)
        return doc.get_update()

    def is_open(self, document_id: str) -> bool:
        return document_id in self._docs

    def editors(self, document_id: str) -> list[str]:
        """The sessions of this process editing the document."""
        live = self._docs.get(document_id)
        return list(live.editors) if live is not None else []

    async def compaction_idle(self, document_id: str) -> None:
        """Wait for a running compaction of the document (tests and benchmarks)."""
        live = self._docs.get(document_id)
        if live is not None and live.compact_task is not None:
            await asyncio.shield(live.compact_task)

    # lifecycle

    async def close(self) -> None:
        """Save pending content and finish compactions; called at shutdown."""
        for live in list(self._docs.values()):
            await self._flush(live)
            if live.save_task is not None:
                # Nothing is pending any more, so the task is only sleeping or about to find nothing to do.
                live.save_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await live.save_task
            if live.compact_task is not None:
                with contextlib.suppress(Exception):
                    await live.compact_task
        self._docs.clear()
        if isinstance(self.store, QueuesAppends):
            await self.store.drain()  # updates whose commit is pending are stored before the database closes

    # hooks from the note service

    async def _on_access_lost(self, note_id: str, user_id: str) -> None:
        document_id = f"note:{note_id}"
        async with self._locked(document_id, create=False) as live:
            if live is None:
                return
            for sid, editor in list(live.editors.items()):
                if editor.user_id == user_id:
                    await self._forget(live, sid)
        await self._evict_if_idle(document_id)

    async def _on_content_replaced(self, note_id: str) -> None:
        """The note's content was replaced over REST: when nobody edits it here, drop the stored Yjs state so the
        next editor rebuilds the document from that content (Open WebUI's editor does so from an empty state);
        otherwise the next save from the editors would silently overwrite the REST change."""
        document_id = f"note:{note_id}"
        async with self._opening_lock(document_id):
            # The room is the fleet-wide view of who edits (this process's documents are a subset of it).
            if document_id in self._docs or await self.broker.room_sids(doc_room(document_id)):
                log.info(
                    "note content replaced while being edited; the document keeps its state",
                    extra={"document_id": document_id},
                )
                return
            await self.store.delete(document_id)

    async def _on_note_deleted(self, note_id: str) -> None:
        document_id = f"note:{note_id}"
        live = self._docs.pop(document_id, None)
        if live is not None:
            live.pending = None
            for task in (live.save_task, live.compact_task):
                if task is not None:
                    task.cancel()
            for sid in live.editors:
                self._by_sid.get(sid, set()).discard(document_id)
        await self.store.delete(document_id)

    # internals

    @contextlib.asynccontextmanager
    async def _locked(
        self, document_id: str, *, create: bool, fresh: bool = False
    ) -> AsyncIterator[LiveDoc | None]:
        """The open document with its lock held (loaded first when `create`), or None when it is not open."""
        while True:
            live = await self._open(document_id) if create else self._docs.get(document_id)
            if live is None:
                yield None
                return
            async with live.lock:
                if self._docs.get(document_id) is not live:
                    continue  # evicted while we waited; open it again
                if live.stale or (fresh and self.shared):
                    live.doc, live.tail, live.size = await self._load(document_id)
                    live.stale = False
                yield live
                return

    async def _open(self, document_id: str) -> LiveDoc:
        live = self._docs.get(document_id)
        if live is not None:
            return live
        async with self._opening_lock(document_id):
            live = self._docs.get(document_id)
            if live is None:
                doc, tail, size = await self._load(document_id)
                live = self._docs.setdefault(document_id, LiveDoc(document_id, doc, tail, size))
        return live

    def _opening_lock(self, document_id: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Serialises loading a document with resetting its stored state (one lock per document id, kept while
        it is held or waited for)."""
        return self._opening.hold(document_id)

    def opening_locks(self) -> int:
        """Document ids whose opening lock is held or waited for now (tests)."""
        return len(self._opening)

    async def _load(self, document_id: str) -> tuple[Doc, int, int]:
        """A Doc rebuilt from the stored snapshot and tail, the tail's length, and the bytes it was built from."""
        try:
            stored = await self.store.load(document_id)
        except Exception as exc:
            log.exception("loading a document failed", extra={"document_id": document_id})
            raise ChatwireError(ErrorCode.UNAVAILABLE, "the document could not be loaded") from exc
        doc: Doc = Doc()
        for seq, update in zip(stored.seqs, stored.updates, strict=True):
            try:
                apply_update(doc, update)
            except ValueError:
                log.error("stored update cannot be applied", extra={"document_id": document_id, "seq": seq})
        return doc, stored.tail, sum(len(update) for update in stored.updates)

    async def _require_editor(self, live: LiveDoc | None, sid: str, document_id: str) -> LiveDoc:
        """The document, if `sid` joined it and is still in its room (the room is the authority)."""
        if live is None or sid not in live.editors:
            raise ChatwireError(ErrorCode.NOT_MEMBER, "join the document first")
        if live.room not in await self.broker.rooms_of(sid):
            await self._forget(live, sid)
            raise ChatwireError(ErrorCode.NOT_MEMBER, "no longer in the document's room")
        return live

    async def _send_state(self, live: LiveDoc, sid: str) -> list[str]:
        sessions = await self.broker.room_sids(live.room)
        await self.broker.emit(
            STATE_EVENT,
            {"document_id": live.document_id, "state": list(live.doc.get_update()), "sessions": sessions},
            room=sid,
        )
        return sessions

    def _check_size(self, live: LiveDoc, update: bytes) -> None:
        """Refuse an update that would take the document past `max_doc_bytes` (before it is applied or stored)."""
        if self.max_doc_bytes and live.size + len(update) > self.max_doc_bytes:
            raise ChatwireError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"the document is at its size limit ({self.max_doc_bytes} bytes): no more updates are accepted",
            )

    def _apply(self, live: LiveDoc, update: bytes) -> None:
        """Apply to the live Doc; a malformed update is refused here, before anything is stored."""
        try:
            apply_update(live.doc, update)
        except ValueError as exc:
            # Decoding fails before anything changes; should pycrdt fail later than that, rebuild the Doc.
            if "Cannot decode" not in str(exc):
                live.stale = True
            raise invalid(f"malformed Yjs update: {exc}") from None

    def _queue_append(self, live: LiveDoc, update: bytes) -> asyncio.Future[int] | None:
        """The pending commit of `update` when the store can fix its place in the log right away (a store that
        group-commits, and only this process writes the document); None when it must be awaited under the lock."""
        if self._append_nowait is None:
            return None
        future: asyncio.Future[int] = self._append_nowait(live.document_id, update)
        return future

    async def _store(self, live: LiveDoc, update: bytes) -> None:
        try:
            await self.store.append(live.document_id, update)
        except Exception as exc:
            self._store_failed(live, exc)
        live.tail += 1

    async def _committed(self, live: LiveDoc, committing: asyncio.Future[int]) -> None:
        try:
            await asyncio.shield(committing)
        except Exception as exc:
            self._store_failed(live, exc)
        live.tail += 1

    def _store_failed(self, live: LiveDoc, exc: Exception) -> None:
        # The live Doc now holds an update the store does not: rebuild it from the store before next use.
        live.stale = True
        log.error(
            "storing an update failed", extra={"document_id": live.document_id, "error": repr(exc)[:300]}
        )
        raise ChatwireError(ErrorCode.UNAVAILABLE, "the update could not be stored; send it again") from exc

    async def _forget(self, live: LiveDoc, sid: str, *, leave_room: bool = True) -> None:
        """Drop `sid` from the document: out of the room, `ydoc:user:left`, and its cursors cleared."""
        editor = live.editors.pop(sid, None)
        docs = self._by_sid.get(sid)
        if docs is not None:
            docs.discard(live.document_id)
            if not docs:
                self._by_sid.pop(sid, None)
        if leave_room:
            await self.broker.leave_room(sid, live.room)
        if editor is None:
            return
        await self.broker.emit(
            LEFT_EVENT,
            {"document_id": live.document_id, "user_id": editor.user_id},
            room=live.room,
            skip_sid=sid,
        )
        if editor.awareness_format is not None and editor.awareness_clients:
            removal = awareness_removal(editor.awareness_format, editor.awareness_clients)
            await self.broker.emit(
                AWARENESS_EVENT,
                {"document_id": live.document_id, "user_id": editor.user_id, "update": list(removal)},
                room=live.room,
                skip_sid=sid,
            )

    async def _evict_if_idle(self, document_id: str) -> None:
        """Unload a document nobody on this process edits any more; its state stays in the store."""
        live = self._docs.get(document_id)
        if live is None or live.editors:
            return
        async with live.lock:
            if live.editors or self._docs.get(document_id) is not live:
                return
            await self._flush(live)
            if live.compact_task is not None:
                with contextlib.suppress(Exception):
                    await live.compact_task
            if live.pending is None:
                self._docs.pop(document_id, None)

    def _schedule_save(self, live: LiveDoc, user: User, content: Any) -> None:
        now = asyncio.get_running_loop().time()
        if live.pending is None:
            live.pending = PendingSave(content, user, now, now)
        else:
            live.pending.content, live.pending.user, live.pending.last_at = content, user, now
        if live.save_task is None or live.save_task.done():
            live.save_task = asyncio.create_task(self._save_later(live), name="chatwire-doc-save")

    async def _save_later(self, live: LiveDoc) -> None:
        loop = asyncio.get_running_loop()
        while live.pending is not None:
            pending = live.pending
            due = min(
                pending.last_at + self.save_debounce,
                pending.first_at + self.save_debounce * SAVE_MAX_DELAY_FACTOR,
            )
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            await self._flush(live)

    async def _flush(self, live: LiveDoc) -> None:
        """Save the pending note content now (saves of one document never overtake each other)."""
        async with live.save_lock:
            pending, live.pending = live.pending, None
            if pending is None:
                return
            note_id = note_id_of(live.document_id)
            try:
                note = await self.notes.require(note_id, pending.user, "write")
                data = dict(note.data or {})
                data["content"] = pending.content
                saved = await self.notes.repo.update(note_id, data=data)
                if saved is not None:
                    await self.notes.report_updated(saved, pending.user, "editor")
            except ChatwireError as exc:
                log.info(
                    "note content not saved",
                    extra={
                        "document_id": live.document_id,
                        "user_id": pending.user.id,
                        "reason": exc.message,
                    },
                )
            except Exception:
                log.exception(
                    "saving note content failed; will retry", extra={"document_id": live.document_id}
                )
                if live.pending is None:
                    now = asyncio.get_running_loop().time()
                    pending.first_at = pending.last_at = now
                    live.pending = pending
                    if live.save_task is None or live.save_task.done():
                        live.save_task = asyncio.create_task(self._save_later(live), name="chatwire-doc-save")

    async def compact(self, document_id: str) -> int:
        """Fold the document's stored log into one snapshot now; returns how many updates were folded.

        Works from the store alone (the document need not be open); entries appended meanwhile stay as they are.
        """
        stored = await self.store.load(document_id)
        if stored.tail == 0 or len(stored.updates) < 2:
            return 0
        snapshot = build_snapshot(stored.updates)
        await self.store.compact(document_id, snapshot, stored.seqs)
        log.debug(
            "document compacted",
            extra={"document_id": document_id, "entries": len(stored.seqs), "bytes": len(snapshot)},
        )
        return stored.tail

    async def _compact(self, live: LiveDoc) -> None:
        try:
            folded = await self.compact(live.document_id)
            live.tail = max(0, live.tail - folded)
            if folded:  # deleted content is garbage-collected in the encoded state: the exact size again
                live.size = len(live.doc.get_update())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("compaction failed", extra={"document_id": live.document_id})
