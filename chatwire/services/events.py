"""The chat event stream: emitters bound to one message, event calls to one session.

`get_event_emitter(request_info)` and `get_event_call(request_info)` mirror the two callables Open WebUI hands to
tools and pipelines. Every event of a message passes one per-message gate: it is queued for persistence and sent
to `user:{user_id}` in the same order, also when several emitters (tasks, REST callers) stream into one message.
Delivery never waits on the database: queueing is synchronous, the writer drains in the background.

Fast path (one per token, so it matters): when nothing of the message is in flight (no gate: no emit holds or
waits for its lock, no snapshot holds the chat) and the broker can deliver without awaiting (`EmitsNow`), the event
is delivered and queued in one synchronous step, without a gate. That step cannot overtake anything of the message:
an emit on the locked path keeps its gate until it is done, and while a gate exists every later emit of the message
takes the locked path behind it. The broker declines (`emit_now` False) when its own awaiting emit is in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from chatwire.backends.broker import Broker, EmitsNow
from chatwire.backends.sessions import SessionStore
from chatwire.errors import invalid
from chatwire.services.persistence import MessageWriter
from chatwire.services.rooms import user_room

log = logging.getLogger("chatwire.events")

CHAT_EVENT = "events"
MAX_TYPE_LENGTH = 128


@dataclass(frozen=True)
class RequestInfo:
    """Who a generation streams to: the user, the chat and message it writes, the tab that asked."""

    user_id: str
    chat_id: str | None
    message_id: str | None
    session_id: str | None = None

    @classmethod
    def of(cls, info: RequestInfo | Mapping[str, Any]) -> RequestInfo:
        """Accept a RequestInfo or Open WebUI's dict `{user_id, chat_id, message_id, session_id}`."""
        if isinstance(info, RequestInfo):
            return info
        user_id = info.get("user_id")
        if not user_id:
            raise invalid("request_info needs user_id")
        return cls(
            user_id=str(user_id),
            chat_id=_opt(info.get("chat_id")),
            message_id=_opt(info.get("message_id")),
            session_id=_opt(info.get("session_id")),
        )


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


def check_event(event: Any) -> dict[str, Any]:
    """An event `{type, data?}` with a bounded string type, as a dict of its own (a caller that reuses its dict
    for the next event must not change what is queued for persistence); a clear error otherwise."""
    if type(event) is not dict and not isinstance(event, Mapping):
        raise invalid("an event is an object {type, data}")
    kind = event.get("type")
    if not isinstance(kind, str) or not kind or len(kind) > MAX_TYPE_LENGTH:
        raise invalid(f"event type must be a string of 1 to {MAX_TYPE_LENGTH} characters")
    return {"type": kind, "data": event.get("data")}


class _Gate:
    __slots__ = ("lock", "seq", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.seq = 0
        self.users = 0


class ChatEvents:
    """Emits chat events to a user's tabs and persists them; answers event calls to one of the user's tabs."""

    def __init__(
        self, broker: Broker, sessions: SessionStore, writer: MessageWriter, call_timeout: float
    ) -> None:
        self.broker = broker
        self.sessions = sessions
        self.writer = writer
        self.call_timeout = call_timeout
        self._emit_now: Callable[..., bool] | None = broker.emit_now if isinstance(broker, EmitsNow) else None
        self._gates: dict[tuple[str, str], _Gate] = {}
        self._holds: dict[str, asyncio.Event] = {}
        self._calls: dict[str, set[asyncio.Task[Any]]] = {}
        self.delivery_failures = 0

    async def emit(self, user_id: str, chat_id: str | None, message_id: str | None, event: Any) -> int:
        """Send one event of a message to `user:{user_id}` and queue it for persistence, in one order.

        Returns the event's place among the message's events in flight at once (1 when it waited for none; 0 for
        events without a message).
        """
        return await self.emit_to(user_room(user_id), chat_id, message_id, event)

    async def emit_to(self, room: str, chat_id: str | None, message_id: str | None, event: Any) -> int:
        """`emit` with the user's room name already made (an emitter makes it once, not once per token)."""
        event = check_event(event)
        payload = {"chat_id": chat_id, "message_id": message_id, "data": event}
        if not chat_id or not message_id:
            await self._deliver(payload, room)
            return 0
        key = (chat_id, message_id)
        emit_now = self._emit_now
        if emit_now is not None and key not in self._gates and not (self._holds and chat_id in self._holds):
            # Uncontended (see the module doc): deliver and queue in one step, no gate, no await.
            try:
                done = emit_now(CHAT_EVENT, payload, room=room)
            except Exception:
                self._delivery_failed(room)
                done = True
            if done:
                self.writer.submit(chat_id, message_id, event)
                return 1
        if self._holds:
            hold = self._holds.get(chat_id)
            while hold is not None:  # a reader is taking a consistent snapshot of this chat
                await hold.wait()
                hold = self._holds.get(chat_id)
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = _Gate()
        gate.users += 1
        lock = gate.lock
        try:
            await lock.acquire()
            try:
                gate.seq += 1
                seq = gate.seq
                self.writer.submit(chat_id, message_id, event)
                try:  # inline `_deliver`: one coroutine less per token
                    await self.broker.emit(CHAT_EVENT, payload, room=room)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self._delivery_failed(room)
                return seq
            finally:
                lock.release()
        finally:
            gate.users -= 1
            if gate.users == 0 and self._gates.get(key) is gate:
                del self._gates[key]

    @contextlib.asynccontextmanager
    async def quiet(self, chat_id: str) -> AsyncIterator[None]:
        """Hold new events of `chat_id` while the body runs, after the events in flight are delivered and stored.

        Inside, what the database holds for the chat is exactly what was emitted so far, and so is the stream: a
        read of the chat plus the stream's head there is a consistent snapshot (a new tab replays from that head
        without gaps or repeats). Holds last as long as a database read; generations of other processes of a fleet
        are not held (their events may overlap the snapshot by a few deltas)."""
        while (previous := self._holds.get(chat_id)) is not None:
            await previous.wait()
        hold = self._holds[chat_id] = asyncio.Event()
        try:
            for (gate_chat, _message), gate in list(self._gates.items()):
                if gate_chat == chat_id:
                    async with gate.lock:  # the emit in progress completes (stored in the queue, delivered)
                        pass
            await self.writer.flush(chat_id)
            yield
        finally:
            hold.set()
            if self._holds.get(chat_id) is hold:
                del self._holds[chat_id]

    async def _deliver(self, payload: dict[str, Any], room: str) -> None:
        # A broken transport must not fail the generation: the event is persisted regardless.
        try:
            await self.broker.emit(CHAT_EVENT, payload, room=room)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._delivery_failed(room)

    def _delivery_failed(self, room: str) -> None:
        """Called in the `except` of a failed delivery (the traceback goes to the log)."""
        self.delivery_failures += 1
        log.exception("event delivery failed", extra={"room": room})

    async def call(self, info: RequestInfo, event: Any, timeout: float | None = None) -> Any:
        """Ask the requesting tab and return its answer; `{"error": ...}` if refused, gone or timed out."""
        event = check_event(event)
        if not info.session_id:
            return {"error": "no session to ask"}
        owner = await self.sessions.get(info.session_id)
        if owner is None:
            return {"error": "session gone"}
        if owner.user_id != info.user_id:
            log.warning(
                "event call to another user's session refused",
                extra={"user_id": info.user_id, "sid": info.session_id},
            )
            return {"error": "session belongs to another user"}
        payload = {"chat_id": info.chat_id, "message_id": info.message_id, "data": event}
        sid = info.session_id
        task = asyncio.ensure_future(
            self.broker.call(CHAT_EVENT, payload, sid=sid, timeout=timeout or self.call_timeout)
        )
        self._calls.setdefault(sid, set()).add(task)
        try:
            return await asyncio.shield(task)
        except TimeoutError:
            return {"error": "timed out waiting for the session"}
        except asyncio.CancelledError:
            if task.cancelled() and not _current_cancelling():
                return {"error": "session gone"}
            task.cancel()
            raise
        except Exception as exc:
            log.info("event call failed", extra={"sid": sid, "error": repr(exc)[:200]})
            return {"error": "session gone"}
        finally:
            pending = self._calls.get(sid)
            if pending is not None:
                pending.discard(task)
                if not pending:
                    del self._calls[sid]

    def session_gone(self, sid: str) -> None:
        """A session disconnected: its pending event calls answer `{"error": "session gone"}` at once."""
        for task in self._calls.pop(sid, set()):
            task.cancel()

    def get_event_emitter(self, request_info: RequestInfo | Mapping[str, Any]) -> EventEmitter:
        """An async callable `emitter({type, data})` bound to (user, chat, message, session)."""
        return EventEmitter(self, RequestInfo.of(request_info))

    def get_event_call(self, request_info: RequestInfo | Mapping[str, Any]) -> EventCaller:
        """An async callable `call({type, data}) -> answer` to the requesting session only."""
        return EventCaller(self, RequestInfo.of(request_info))


def _current_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class EventEmitter:
    """`await emitter({"type": ..., "data": ...})`: one event of the bound message to all the user's tabs."""

    __slots__ = ("chat_id", "events", "info", "message_id", "room")

    def __init__(self, events: ChatEvents, info: RequestInfo) -> None:
        self.events = events
        self.info = info
        self.room = user_room(info.user_id)
        self.chat_id = info.chat_id
        self.message_id = info.message_id

    def __call__(self, event: Mapping[str, Any]) -> Coroutine[Any, Any, int]:
        # The `emit_to` coroutine itself, not one wrapping it: one coroutine level less per token.
        return self.events.emit_to(self.room, self.chat_id, self.message_id, event)


class EventCaller:
    """`await call({"type": "confirmation", "data": {...}})`: the requesting tab's answer, or `{"error": ...}`."""

    def __init__(self, events: ChatEvents, info: RequestInfo) -> None:
        self.events = events
        self.info = info

    async def __call__(self, event: Mapping[str, Any], timeout: float | None = None) -> Any:
        return await self.events.call(self.info, event, timeout)
