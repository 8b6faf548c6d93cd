"""The message writer: turns the ordered event stream of each message into few, small database writes.

Per (chat_id, message_id) the writer keeps an ordered queue of events, filled synchronously at emission (so the
queue order is the emission order) and drained by one task per message. A drain applies the queued events with
the shared reducer to a cached copy of the message, then writes ONE UPDATE: the content suffix appended in SQL
(`content || :suffix`, guarded by the stored length so a retry never appends twice) plus the list and scalar
fields that changed. It drains on `done`, at the next flush tick (one clock of `flush_interval` for all messages),
and at shutdown. The UPDATEs of the messages due together share one transaction (group commit): with hundreds
of answers streaming, the database sees a few transactions per tick, not one per message. Each event is applied
once and writes happen in order, so the stored message is always a prefix of what was emitted, and an n-byte answer costs
O(n) bytes written. Emission never waits for the database. A write that fails because the database is away
(connection lost, locked, timed out) is retried with back-off for as long as it takes; any other failure is a
property of the data and would fail forever, so after `max_attempts` tries the batch is given up: events in it that
hold unstorable text (`text_problem`) are dropped, the rest are queued again on a state reloaded from the row, and
the loss is logged and counted (`WriterStats.abandoned`). Other writes and readers of the chat never wait on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from chatwire.db.models import ChatMessage
from chatwire.db.repos.chats import PATCH_COLUMNS, MessagePatch, MessageStore
from chatwire.services.reducer import CONTENT, apply_event, is_persisted_chat, new_message
from chatwire.util import settle, text_problem

log = logging.getLogger("chatwire.persistence")

# Message fields read back from a stored row into the writer's cached state.
_STATE_FIELDS = ("content", *PATCH_COLUMNS)


@dataclass
class WriterStats:
    """Counters for metrics and the benchmark."""

    events: int = 0
    writes: int = 0
    bytes_written: int = 0
    failures: int = 0
    dropped: int = 0
    abandoned: int = 0  # events given up after `max_attempts` failed writes (not a database outage)


def _transient(exc: BaseException) -> bool:
    """Whether a failed write may succeed later unchanged: the database is away, locked or slow."""
    if isinstance(exc, OSError | TimeoutError | ConnectionError | OperationalError | InterfaceError):
        return True
    if isinstance(exc, sqlite3.OperationalError | sqlite3.InterfaceError):  # the SQLite direct lane's driver
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


@dataclass
class _Slot:
    chat_id: str
    message_id: str
    pending: deque[dict[str, Any]] = field(default_factory=deque)
    state: dict[str, Any] | None = None
    stored_content: str = ""
    dirty: set[str] = field(default_factory=set)
    chat_dirty: dict[str, Any] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    urgent: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    orphan: bool = False
    task: asyncio.Task[None] | None = None
    # The events applied to `state`/`chat_dirty` since the last successful write (given up as one batch).
    batch: list[dict[str, Any]] = field(default_factory=list)
    retried: bool = False  # `batch` was queued again once after a give-up
    reported: bool = False  # the message's end was told to `finished` (or it was stored done before)


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait for `event` at most `seconds`; True if it is set. Cancellation always propagates."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


# Answer rows kept for `prime` (a generation whose first write never comes must not hold its row forever).
MAX_PRIMED = 4096

CHAT_SLOT = ""  # the message id of a chat's own queue (title, tags)


def _touches_chat(event: dict[str, Any]) -> bool:
    kind = event.get("type")
    if kind in ("chat:title", "chat:tags"):
        return True
    data = event.get("data")
    return kind == "chat:completion" and isinstance(data, dict) and bool(data.get("title"))


_APPENDS = frozenset({"message", "chat:message:delta"})


def _plain_delta(event: dict[str, Any]) -> str | None:
    """The text of an append event (`message`, `chat:message:delta`) with string content, else None."""
    if event.get("type") not in _APPENDS:
        return None
    data = event.get("data")
    content = data.get("content") if isinstance(data, dict) else None
    return content if isinstance(content, str) else None


def _delta_event(text: str) -> dict[str, Any]:
    return {"type": "message", "data": {"content": text}}


def _ends_message(event: dict[str, Any]) -> bool:
    kind = event.get("type")
    data = event.get("data")
    if kind == "chat:tasks:cancel":
        return True
    return kind == "chat:completion" and isinstance(data, dict) and bool(data.get("done"))


class MessageWriter:
    """Ordered, coalescing, retrying persistence of chat events; one drain task per active message."""

    def __init__(
        self,
        store: MessageStore,
        *,
        flush_interval: float = 0.25,
        retry_max_delay: float = 5.0,
        idle_seconds: float = 30.0,
        max_attempts: int = 4,
        database_answers: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.store = store
        self.max_attempts = max_attempts
        # Asked before a failure counts towards giving up: while the database does not answer at all, the
        # failure is an outage whatever the driver called it, and the write waits for it to come back.
        self.database_answers = database_answers
        self.flush_interval = flush_interval
        self.retry_max_delay = retry_max_delay
        self.idle_seconds = idle_seconds
        self.stats = WriterStats()
        # Called with the duration of each database write (metrics: chatwire_persistence_flush_seconds).
        self.flush_observer: Callable[[float], None] | None = None
        # Called once with (chat_id, message_id, final state) when a message is stored done (outgoing webhooks).
        self.finished: Callable[[str, str, dict[str, Any]], Awaitable[None]] | None = None
        self._slots: dict[tuple[str, str], _Slot] = {}
        # Answer rows just stored empty by ChatRepo.add_turn (see `prime`), oldest first.
        self._primed: OrderedDict[tuple[str, str], ChatMessage] = OrderedDict()
        # Group commit: the patches of all messages that are due together are written in one transaction.
        self._patches: list[tuple[MessagePatch, asyncio.Future[bool]]] = []
        self._committer: asyncio.Task[None] | None = None
        self._closing = False
        self._stopped = False

    def prime(self, row: ChatMessage) -> None:
        """An answer row was just stored (empty, unfinished): its message's first write starts from it instead of
        reading it back. Only before that first write; a message already being written keeps its own state."""
        key = (row.chat_id, row.id)
        slot = self._slots.get(key)
        if slot is not None and slot.state is not None:
            return
        try:  # what the first write reads from it (a row that cannot answer is read back as before)
            for column in ("content", "done", *PATCH_COLUMNS.values()):
                getattr(row, column)
        except Exception:
            return
        self._primed[key] = row
        while len(self._primed) > MAX_PRIMED:
            self._primed.popitem(last=False)

    def submit(self, chat_id: str, message_id: str, event: dict[str, Any]) -> bool:
        """Queue one event for persistence, in call order; never waits. False if the chat is not persisted."""
        if not message_id or not is_persisted_chat(chat_id):
            return False
        if self._closing:
            self.stats.dropped += 1
            log.error(
                "event after shutdown not persisted", extra={"chat_id": chat_id, "message_id": message_id}
            )
            return False
        self.stats.events += 1
        if event.get("type") in _APPENDS:  # a token: neither an end nor a chat-level field
            self._enqueue(chat_id, message_id, event, urgent=False)
            return True
        self._enqueue(chat_id, message_id, event, urgent=_ends_message(event))
        if _touches_chat(event):
            # Chat-level fields go through one queue per chat, so their order holds across messages.
            self._enqueue(chat_id, CHAT_SLOT, event, urgent=True)
        return True

    def _enqueue(self, chat_id: str, message_id: str, event: dict[str, Any], *, urgent: bool) -> None:
        key = (chat_id, message_id)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot(chat_id, message_id)
            slot.task = asyncio.create_task(self._run(slot), name=f"chatwire-writer-{chat_id}-{message_id}")
        slot.pending.append(event)
        slot.idle.clear()
        slot.wake.set()
        if urgent:
            slot.urgent.set()

    async def flush(self, chat_id: str | None = None, message_id: str | None = None) -> None:
        """Write now what is queued (for one message, or all), and wait until it is stored."""
        slots = [
            s
            for s in list(self._slots.values())
            if (chat_id is None or s.chat_id == chat_id)
            and (message_id is None or s.message_id == message_id)
        ]
        for slot in slots:
            slot.urgent.set()
            slot.wake.set()
        for slot in slots:
            await slot.idle.wait()

    async def close(self, timeout: float = 10.0) -> None:
        """Flush everything queued and stop the drain tasks (lifespan shutdown)."""
        self._closing = True
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except TimeoutError:
            lost = sum(len(s.pending) for s in self._slots.values())
            log.error("shutdown flush timed out", extra={"messages": len(self._slots), "events": lost})
        self._stopped = True
        for slot in list(self._slots.values()):
            if slot.task is not None:
                slot.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await slot.task
        self._slots.clear()

    def active(self) -> int:
        """Messages with a drain task."""
        return len(self._slots)

    def queued(self) -> int:
        """Events waiting to be applied and written (metrics: chatwire_persistence_queue_depth)."""
        return sum(len(slot.pending) for slot in self._slots.values())

    def _until_tick(self) -> float:
        """Seconds to the next flush tick, one clock for all messages (multiples of `flush_interval` in loop time):
        the messages streaming at once are due in the same loop turn, and their writes share one transaction."""
        interval = self.flush_interval
        return interval - asyncio.get_running_loop().time() % interval

    def _observe(self, started: float) -> None:
        if self.flush_observer is not None:
            self.flush_observer(time.perf_counter() - started)

    async def _run(self, slot: _Slot) -> None:
        key = (slot.chat_id, slot.message_id)
        try:
            while not self._stopped:
                if not await _wait(slot.wake, self.idle_seconds):
                    if not slot.pending and not slot.dirty and not slot.chat_dirty:
                        return
                    continue
                if not self._closing:
                    await _wait(slot.urgent, self._until_tick())
                slot.wake.clear()
                slot.urgent.clear()
                await self._drain(slot)
                if not slot.pending:
                    slot.idle.set()
                    if (slot.state is not None and slot.state.get("done")) or slot.orphan:
                        await self._report_finished(slot)
                        return  # a finished message needs no cache; a later event reloads it
        finally:
            if self._slots.get(key) is slot and not slot.pending:
                del self._slots[key]
            slot.idle.set()

    async def _report_finished(self, slot: _Slot) -> None:
        if self.finished is None or slot.orphan or slot.state is None or slot.reported:
            return
        slot.reported = True
        try:
            await self.finished(slot.chat_id, slot.message_id, slot.state)
        except Exception:
            log.exception(
                "finished hook failed", extra={"chat_id": slot.chat_id, "message_id": slot.message_id}
            )

    async def _drain(self, slot: _Slot) -> None:
        delay = 0.05
        attempts = 0
        while True:
            try:
                await self._write(slot)
                slot.batch.clear()
                slot.retried = False
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.failures += 1
                attempts += 1
                if not _transient(exc) and attempts >= self.max_attempts:
                    if self.database_answers is None or await self._answers():
                        self._give_up(slot, exc)
                        return
                    attempts = 0  # an outage after all
                log.warning(
                    "message write failed; retrying",
                    extra={
                        "chat_id": slot.chat_id,
                        "message_id": slot.message_id,
                        "error": repr(exc)[:300],
                        "retry_in": delay,
                    },
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_delay)

    async def _answers(self) -> bool:
        assert self.database_answers is not None
        try:
            return await asyncio.wait_for(self.database_answers(), 5)
        except asyncio.CancelledError:
            raise
        except Exception:
            return False

    def _give_up(self, slot: _Slot, exc: Exception) -> None:
        """Isolate a batch that cannot be written: forget what it changed (the state reloads from the row), drop
        its events with unstorable text and queue the others again, once; a second failure drops them all."""
        batch, slot.batch = slot.batch, []
        if not batch:  # the failure came before the events were applied (loading the row): they are the batch
            batch = list(slot.pending)
            slot.pending.clear()
        keep = [] if slot.retried else [e for e in batch if text_problem(e) is None]
        lost = len(batch) - len(keep)
        slot.state = None
        slot.stored_content = ""
        slot.dirty.clear()
        slot.chat_dirty.clear()
        slot.retried = bool(keep)
        slot.pending.extendleft(reversed(keep))
        self.stats.abandoned += lost
        log.error(
            "message write given up; events not persisted",
            extra={
                "chat_id": slot.chat_id,
                "message_id": slot.message_id,
                "events": lost,
                "requeued": len(keep),
                "error": repr(exc)[:300],
            },
        )
        if keep:
            slot.wake.set()
            slot.urgent.set()

    async def _write(self, slot: _Slot) -> None:
        if slot.message_id == CHAT_SLOT:
            await self._write_chat(slot)
            return
        if slot.state is None:
            if not any(apply_event(new_message(slot.message_id), e).fields for e in slot.pending):
                slot.pending.clear()  # nothing to store (chat:active, notifications...): create no row
                return
            row = self._primed.pop((slot.chat_id, slot.message_id), None)
            if row is None:
                row = await self.store.load_or_create(slot.chat_id, slot.message_id)
            if row is None:
                self.stats.dropped += len(slot.pending)
                slot.pending.clear()
                slot.orphan = True
                log.warning(
                    "events for an unknown chat not persisted",
                    extra={"chat_id": slot.chat_id, "message_id": slot.message_id},
                )
                return
            slot.state = {"content": row.content, "done": row.done}
            slot.reported = bool(row.done)
            for name, col in PATCH_COLUMNS.items():
                if name != "done":
                    slot.state[name] = getattr(row, col)
            slot.stored_content = row.content
        if slot.orphan:
            slot.pending.clear()
            return
        # Apply exactly the events queued so far, once each; new ones wait for the next drain.
        # Runs of plain deltas are joined first: one string concatenation per run, not one per delta.
        run: list[str] = []
        for _ in range(len(slot.pending)):
            event = slot.pending.popleft()
            slot.batch.append(event)
            piece = _plain_delta(event)
            if piece is not None:
                run.append(piece)
                continue
            if run:
                slot.dirty |= apply_event(slot.state, _delta_event("".join(run))).fields
                run.clear()
            slot.dirty |= apply_event(slot.state, event).fields
        if run:
            slot.dirty |= apply_event(slot.state, _delta_event("".join(run))).fields
        if not slot.dirty:
            return
        await self._store(slot, slot.state)

    async def _commit(self, patch: MessagePatch) -> bool:
        """Write one message's patch together with the others queued by now (one transaction for all); whether it
        was written. A failure of the shared transaction is retried patch by patch, so each message's drain sees
        only its own failure (and retries or gives up as before)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._patches.append((patch, future))
        if self._committer is None:
            # A task, not a direct write: the drains woken in this loop turn queue their patches first.
            self._committer = asyncio.create_task(self._commit_queued(), name="chatwire-writer-commit")
        return await future

    async def _commit_queued(self) -> None:
        batch: list[tuple[MessagePatch, asyncio.Future[bool]]] = []
        try:
            while self._patches:
                queued, self._patches = self._patches, []
                batch = [(p, f) for p, f in queued if not f.done()]  # a cancelled drain wants nothing written
                if not batch:
                    continue
                try:
                    written = await self.store.write_patches([p for p, _f in batch])
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if len(batch) == 1:
                        settle(batch[0][1], False, exc)
                        continue
                    for patch, future in batch:
                        try:
                            (one,) = await self.store.write_patches([patch])
                        except asyncio.CancelledError:
                            raise
                        except Exception as one_exc:
                            settle(future, False, one_exc)
                        else:
                            settle(future, one)
                    continue
                for (_patch, future), ok in zip(batch, written, strict=True):
                    settle(future, ok)
        finally:
            self._committer = None
            # Cancelled (shutdown) mid-write: the batch in flight and the patches queued behind it get no answer,
            # so their drains are told (cancelled) instead of waiting for ever.
            for _patch, future in (*batch, *self._patches):
                if not future.done():
                    future.cancel()
            self._patches.clear()

    async def _write_chat(self, slot: _Slot) -> None:
        for _ in range(len(slot.pending)):
            event = slot.pending.popleft()
            slot.batch.append(event)
            slot.chat_dirty.update(apply_event({}, event).chat)
        if not slot.chat_dirty:
            return
        started = time.perf_counter()
        if not await self.store.update_chat(slot.chat_id, slot.chat_dirty):
            self.stats.dropped += 1
            log.warning("chat fields for an unknown chat not persisted", extra={"chat_id": slot.chat_id})
        else:
            self.stats.writes += 1
            self.stats.bytes_written += len(orjson.dumps(slot.chat_dirty, default=str))
            self._observe(started)
        slot.chat_dirty.clear()

    async def _store(self, slot: _Slot, state: dict[str, Any]) -> None:
        values = {name: state.get(name) for name in slot.dirty if name != CONTENT}
        content: str = state.get(CONTENT) or ""
        suffix: str | None = None
        full: str | None = None
        if CONTENT in slot.dirty:
            if content.startswith(slot.stored_content):
                suffix = content[len(slot.stored_content) :]
            else:
                full = content
        started = time.perf_counter()
        written = await self._commit(
            MessagePatch(slot.chat_id, slot.message_id, suffix, len(slot.stored_content), full, values)
        )
        if not written:
            # The stored content is not what we last wrote (lost outcome of a write, or another writer):
            # our cached state is authoritative for this message, so store it in full.
            log.warning(
                "stored content diverged; rewriting message",
                extra={"chat_id": slot.chat_id, "message_id": slot.message_id},
            )
            full, suffix = content, None
            written = await self._commit(
                MessagePatch(slot.chat_id, slot.message_id, content=full, values=values)
            )
            if not written:
                slot.orphan = True
                slot.dirty.clear()
                log.warning(
                    "message row gone; events not persisted",
                    extra={"chat_id": slot.chat_id, "message_id": slot.message_id},
                )
                return
        self.stats.writes += 1
        self._observe(started)
        self.stats.bytes_written += len((suffix or full or "").encode()) + (
            len(orjson.dumps(values, default=str)) if values else 0
        )
        slot.stored_content = content
        slot.dirty.clear()
