"""Generations: `POST /api/chat/completions` stores the turn, then streams the answer as chat events.

Before the answer starts, the turn is stored: the user message (unless the client stored it already) and an
empty assistant answer under it that records its `model`. The model then receives the conversation: the body's
`messages` when the client sends them, otherwise the stored path from the root to the user message. Two request
shapes work: chatwire's (`messages`, `chat_id`, `id`) and Open WebUI's frontend (`user_message`, `parent_id`,
`chat_id`, `id` or `message_ids`; `parent_id: null` without a chat creates the chat).

The task emits `chat:active`, the model's events (statuses, sources, deltas), a full-content snapshot about once
a second (a tab that opens mid-answer converges), and a final `chat:completion` with `done` and how it ended
(`outcome`): done, stopped (`chat:tasks:cancel`), interrupted (the server shut down) or failed (with a readable
`error`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from chatwire.backends.sessions import SessionStore
from chatwire.db.models import Chat, ChatMessage, User
from chatwire.db.repos.chats import ChatRepo, message_to_json
from chatwire.errors import ChatwireError, forbidden, invalid, not_found
from chatwire.services.coalesce import DeltaCoalescer, plain_delta_text
from chatwire.services.events import ChatEvents, EventCaller, EventEmitter, RequestInfo
from chatwire.services.models import DEMO_MODEL_ID, DemoModel, OpenAIUpstream
from chatwire.services.persistence import MessageWriter
from chatwire.services.reducer import is_persisted_chat
from chatwire.services.rooms import user_room
from chatwire.services.tasks import TaskRegistry
from chatwire.util import new_id, now_s

log = logging.getLogger("chatwire.completions")

# A stop that finds no generation ends the chat's unfinished answers not written for this long as interrupted.
ORPHAN_SECONDS = 10

_APPEND = frozenset({"message", "chat:message:delta"})
_REPLACE = frozenset({"replace", "chat:message"})


def _ends(event: dict[str, Any]) -> bool:
    data = event.get("data")
    return event.get("type") == "chat:completion" and isinstance(data, dict) and bool(data.get("done"))


def _text_of(content: Any) -> str:
    """String content, or the text parts of OpenAI content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def context_of(path: list[ChatMessage]) -> list[dict[str, Any]]:
    """What the model receives for a stored path: role and content of each message; answers that produced
    nothing (failed before the first token) are left out."""
    return [
        {"role": m.role, "content": m.content}
        for m in path
        if m.role in ("user", "assistant", "system") and (m.content or m.role == "user")
    ]


class CompletionService:
    """Lists models, stores turns, starts and stops generations."""

    def __init__(
        self,
        events: ChatEvents,
        tasks: TaskRegistry,
        chats: ChatRepo,
        sessions: SessionStore,
        writer: MessageWriter,
        demo: DemoModel,
        upstream: OpenAIUpstream | None = None,
        *,
        snapshot_seconds: float = 1.0,
        coalesce_seconds: float = 0.0,
    ) -> None:
        self.events = events
        self.tasks = tasks
        self.chats = chats
        self.sessions = sessions
        self.writer = writer
        self.demo = demo
        self.upstream = upstream
        self.snapshot_seconds = snapshot_seconds
        self.coalesce_seconds = coalesce_seconds
        self._closing = False

    async def models(self) -> list[dict[str, Any]]:
        """`demo` plus the upstream's models, each with `available`. While the upstream cannot be reached, the
        models it listed before are listed as unavailable with the reason (`error`); never a silent fallback."""
        out = [{**self.demo.info(), "available": True}]
        if self.upstream is None:
            return out
        try:
            found = await self.upstream.models()
            out.extend({**m, "available": True} for m in found if m["id"] != DEMO_MODEL_ID)
        except ChatwireError as exc:
            log.warning("upstream models unavailable", extra={"error": exc.message})
            out.extend(
                {**m, "available": False, "error": exc.message}
                for m in self.upstream.known_models
                if m["id"] != DEMO_MODEL_ID
            )
        return out

    async def start(
        self,
        user: User,
        *,
        model: str,
        messages: list[dict[str, Any]] | None = None,
        chat_id: str | None = None,
        message_id: str | None = None,
        session_id: str | None = None,
        user_message: dict[str, Any] | None = None,
        parent_id: str | None = None,
        new_chat: bool = False,
    ) -> dict[str, Any]:
        """Check the request, store the turn and start the generation.

        Returns `{status, task_id, task_ids, chat_id, message_id}`."""
        messages = list(messages or [])
        if not messages and user_message is None:
            raise invalid("send messages or user_message")
        if user_message is not None and not isinstance(user_message.get("content", ""), str | list):
            raise invalid("user_message.content must be a string")
        if model != DEMO_MODEL_ID and self.upstream is None:
            raise not_found(f"model {model!r} (this server has no model server configured)")
        if session_id:
            owner = await self.sessions.get(session_id)
            if owner is not None and owner.user_id != user.id:
                raise forbidden("session belongs to another user")
        message_id = message_id or new_id()
        if new_chat and not chat_id:
            record = await self.chats.create(user.id, {"title": "New Chat", "models": [model]})
            chat_id = record.chat.id
        context = messages
        if chat_id and is_persisted_chat(chat_id):
            path = await self._store_turn(user, chat_id, messages, user_message, parent_id, message_id, model)
            if not context:
                context = context_of(path)
        elif not context and user_message is not None:
            context = [{"role": "user", "content": user_message.get("content") or ""}]
        if not context:
            raise invalid("there is no message for the model to answer")
        info = RequestInfo(user.id, chat_id, message_id, session_id)
        emit = self.events.get_event_emitter(info)
        call = self.events.get_event_call(info)
        task = self.tasks.start(
            self._run(model, context, emit, call),
            user_id=user.id,
            chat_id=chat_id,
            message_id=message_id,
        )
        return {
            "status": True,
            "task_id": task.task_id,
            "task_ids": [task.task_id],
            "chat_id": chat_id,
            "message_id": message_id,
        }

    async def _store_turn(
        self,
        user: User,
        chat_id: str,
        messages: list[dict[str, Any]],
        user_message: dict[str, Any] | None,
        parent_id: str | None,
        message_id: str,
        model: str,
    ) -> list[ChatMessage]:
        """Store the user message (if new) and the empty answer; tell the user's tabs; the path to the question."""
        before: list[ChatMessage] = []  # the chat's messages as found, before the turn

        def decide(chat: Chat, found: list[ChatMessage]) -> tuple[dict[str, Any] | None, str | None]:
            """Which question this turn answers, from the chat as stored (read once, in add_turn's transaction)."""
            if chat.user_id != user.id:
                raise not_found("chat")
            before.extend(found)
            rows = {m.id: m for m in found}
            current = rows.get(chat.current_id or "")
            question, parent = user_message, parent_id
            if question is None:
                # chatwire's shape: the last body message is the question; stored already when its id is known,
                # or when it is the chat's current message with the same text.
                last = messages[-1] if messages else {}
                if last.get("role") == "user":
                    known = rows.get(str(last.get("id") or ""))
                    if known is not None and known.role == "user":
                        question = {"id": known.id}
                    elif (
                        current is not None
                        and current.role == "user"
                        and current.content == _text_of(last.get("content"))
                    ):
                        question = {"id": current.id}
                    else:
                        question = {"content": _text_of(last.get("content"))}
                        parent = current.id if current is not None else None
                elif parent is None and current is not None:
                    parent = current.id
            return question, parent

        path = await self.chats.add_turn(
            chat_id,
            user_message=user_message,
            parent_id=parent_id,
            assistant_id=message_id,
            model=model,
            decide=decide,
        )  # a chat that does not exist is `not_found` there too
        rows = {m.id: m for m in before}
        # As Open WebUI's `chat:messages`: the question, the answer and the question's parent, with childrenIds.
        children: dict[str, list[str]] = {}
        for m in [*before, *([path[-1]] if path and path[-1].id not in rows else [])]:
            if m.parent_id is not None and m.id != message_id:
                children.setdefault(m.parent_id, []).append(m.id)
        turn: dict[str, Any] = {}
        for m in path[-2:]:
            turn[m.id] = {**message_to_json(m), "childrenIds": children.get(m.id, [])}
        if path:
            turn[path[-1].id]["childrenIds"] = [*children.get(path[-1].id, []), message_id]
        turn[message_id] = {
            "id": message_id,
            "parentId": path[-1].id if path else None,
            "childrenIds": [],
            "role": "assistant",
            "content": "",
            "model": model,
            "done": False,
            "timestamp": int(time.time()),
        }
        # Every tab of the user learns the question and the new answer before the first token.
        await self.events.emit(
            user.id,
            chat_id,
            message_id,
            {"type": "chat:messages", "data": {"messages": turn, "currentId": message_id}},
        )
        return path

    def _stream(
        self, model: str, messages: list[dict[str, Any]], call: EventCaller
    ) -> AsyncIterator[dict[str, Any]]:
        if model == DEMO_MODEL_ID:
            return self.demo.stream(messages, call)
        assert self.upstream is not None
        return self.upstream.stream(model, messages, call)

    async def _run(
        self, model: str, messages: list[dict[str, Any]], emit: EventEmitter, call: EventCaller
    ) -> None:
        coalescer = DeltaCoalescer(emit, self.coalesce_seconds) if self.coalesce_seconds > 0 else None
        send: Callable[[dict[str, Any]], Awaitable[Any]] = emit if coalescer is None else coalescer.send
        await send({"type": "chat:active", "data": {"active": True}})
        pieces: list[str] = []
        changed = False
        loop = asyncio.get_running_loop()
        next_snapshot = loop.time() + self.snapshot_seconds
        me = asyncio.current_task()
        try:
            done = False
            async for event in self._stream(model, messages, call):
                if coalescer is not None and (text := plain_delta_text(event)) is not None:
                    # The per-token path: the text is held and leaves with the others of its window.
                    pieces.append(text)
                    changed = True
                    if coalescer.add(text):
                        await coalescer.flush()
                else:
                    kind = event.get("type")
                    raw = event.get("data")
                    data: dict[str, Any] = raw if isinstance(raw, dict) else {}
                    if kind in _APPEND and isinstance(data.get("content"), str):
                        pieces.append(data["content"])
                        changed = True
                    elif kind in _REPLACE or (
                        kind == "chat:completion" and isinstance(data.get("content"), str)
                    ):
                        pieces = [str(data.get("content") or "")]
                        changed = False
                    await send(event)
                    done = done or _ends(event)
                if me is not None and me.cancelling():
                    # A stop whose cancel a library swallowed (Python 3.11's wait_for, used by redis-py to send):
                    # honour it here, or the answer would run on to its end after the stop was acknowledged.
                    raise asyncio.CancelledError
                if changed and self.snapshot_seconds > 0 and not done and loop.time() >= next_snapshot:
                    pieces = ["".join(pieces)]
                    await send({"type": "chat:completion", "data": {"content": pieces[0]}})
                    changed = False
                    next_snapshot = loop.time() + self.snapshot_seconds
            if not done:
                await send({"type": "chat:completion", "data": {"done": True}})
        except asyncio.CancelledError:
            if self._closing:  # the server is shutting down: the answer was cut, not stopped by someone
                await send({"type": "chat:completion", "data": {"done": True, "outcome": "interrupted"}})
            else:
                await send({"type": "chat:tasks:cancel", "data": {}})
            raise
        except Exception as exc:
            if isinstance(exc, ChatwireError):
                message = exc.message
            else:
                log.exception("generation crashed", extra={"model": model})
                message = "The answer failed because of an error in chatwire; the server log has the details."
            log.warning("generation failed", extra={"model": model, "error": message})
            error = {"content": message}
            await send({"type": "chat:message:error", "data": {"error": error}})
            await send(
                {"type": "chat:completion", "data": {"done": True, "error": error, "outcome": "failed"}}
            )
        finally:
            await send({"type": "chat:active", "data": {"active": False}})

    async def stop(self, task_id: str, user: User) -> bool:
        """Stop a generation of `user` (admins may stop any)."""
        task = self.tasks.get(task_id)
        if task is not None and task.user_id != user.id and user.role != "admin":
            raise not_found("task")
        stopped = await self.tasks.stop(task_id, user_id=user.id, admin=user.role == "admin")
        if not stopped:
            raise not_found("task")
        return True

    async def stop_chat(self, chat_id: str, user: User) -> bool:
        """Stop every generation of the user's chat, on this process or (fleet) another; whether one ran.

        Works from any tab of the user: it needs the chat, not the task id of the tab that started it."""
        owner = user.id
        if is_persisted_chat(chat_id):
            chat = await self.chats.get(chat_id)
            if chat is None or (chat.user_id != user.id and user.role != "admin"):
                raise not_found("chat")
            owner = chat.user_id
        admin = user.role == "admin"
        here, remote = await self.tasks.stop_chat(chat_id, user_id=user.id, admin=admin)
        if here or remote:
            return True
        if is_persisted_chat(chat_id):
            # No process runs it: an answer left unfinished (its process died; nothing written for a while) is
            # ended as interrupted, so the chat does not stay "generating" until the next start.
            await self.writer.flush(chat_id)
            ended = await self.chats.mark_interrupted(now_s() - ORPHAN_SECONDS, chat_id=chat_id)
            if ended:
                await self.events.broker.emit(
                    "events",
                    {"chat_id": chat_id, "data": {"type": "chat:reload", "data": {}}},
                    room=user_room(owner),
                )
        return False

    def task_ids_for_chat(self, chat_id: str, user: User) -> list[str]:
        return [
            t.task_id for t in self.tasks.for_chat(chat_id) if t.user_id == user.id or user.role == "admin"
        ]

    async def mark_interrupted(self, older_than: int | None) -> int:
        """At start: end the answers nobody streams any more as `interrupted` (see ChatRepo.mark_interrupted)."""
        count = await self.chats.mark_interrupted(older_than)
        if count:
            log.warning("unfinished answers marked interrupted", extra={"count": count})
        return count

    async def close(self) -> None:
        self._closing = True
        await self.tasks.close()
        if self.upstream is not None:
            await self.upstream.close()
