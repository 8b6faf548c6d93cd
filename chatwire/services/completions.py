"""Generations: `POST /api/chat/completions` starts a background task that streams an answer as chat events.

The task emits `chat:active`, the model's events (statuses, sources, deltas) and a final `chat:completion` with
`done`, through the message's emitter, so the answer reaches every tab and is persisted like any other event.
A stop (`TaskRegistry.stop`) cancels it; the task then marks the message done (`chat:tasks:cancel`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from chatwire.backends.sessions import SessionStore
from chatwire.db.models import User
from chatwire.db.repos.chats import ChatRepo
from chatwire.errors import ChatwireError, forbidden, invalid, not_found
from chatwire.services.events import ChatEvents, EventCaller, EventEmitter, RequestInfo
from chatwire.services.models import DEMO_MODEL_ID, DemoModel, OpenAIUpstream
from chatwire.services.persistence import MessageWriter
from chatwire.services.reducer import is_persisted_chat
from chatwire.services.tasks import TaskRegistry
from chatwire.util import new_id

log = logging.getLogger("chatwire.completions")


def _ends(event: dict[str, Any]) -> bool:
    data = event.get("data")
    return event.get("type") == "chat:completion" and isinstance(data, dict) and bool(data.get("done"))


class CompletionService:
    """Lists models, starts and stops generations."""

    def __init__(
        self,
        events: ChatEvents,
        tasks: TaskRegistry,
        chats: ChatRepo,
        sessions: SessionStore,
        writer: MessageWriter,
        demo: DemoModel,
        upstream: OpenAIUpstream | None = None,
    ) -> None:
        self.events = events
        self.tasks = tasks
        self.chats = chats
        self.sessions = sessions
        self.writer = writer
        self.demo = demo
        self.upstream = upstream

    async def models(self) -> list[dict[str, Any]]:
        """`demo` plus the upstream's models (an unreachable upstream lists none and is logged)."""
        out = [self.demo.info()]
        if self.upstream is not None:
            try:
                out.extend(m for m in await self.upstream.models() if m["id"] != DEMO_MODEL_ID)
            except Exception as exc:
                log.warning("upstream models unavailable", extra={"error": repr(exc)[:300]})
        return out

    async def start(
        self,
        user: User,
        *,
        model: str,
        messages: list[dict[str, Any]],
        chat_id: str | None,
        message_id: str | None,
        session_id: str | None,
    ) -> dict[str, Any]:
        """Check the request and start the generation; returns `{status, task_id, message_id}`."""
        if not messages:
            raise invalid("messages must not be empty")
        if model != DEMO_MODEL_ID and self.upstream is None:
            raise not_found(f"model {model!r}")
        if chat_id and is_persisted_chat(chat_id):
            chat = await self.chats.get(chat_id)
            if chat is None or chat.user_id != user.id:
                raise not_found("chat")
        if session_id:
            owner = await self.sessions.get(session_id)
            if owner is not None and owner.user_id != user.id:
                raise forbidden("session belongs to another user")
        message_id = message_id or new_id()
        info = RequestInfo(user.id, chat_id, message_id, session_id)
        emit = self.events.get_event_emitter(info)
        call = self.events.get_event_call(info)
        task = self.tasks.start(
            self._run(model, messages, emit, call),
            user_id=user.id,
            chat_id=chat_id,
            message_id=message_id,
        )
        return {"status": True, "task_id": task.task_id, "message_id": message_id}

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
        await emit({"type": "chat:active", "data": {"active": True}})
        try:
            done = False
            async for event in self._stream(model, messages, call):
                await emit(event)
                done = done or _ends(event)
            if not done:
                await emit({"type": "chat:completion", "data": {"done": True}})
        except asyncio.CancelledError:
            await emit({"type": "chat:tasks:cancel", "data": {}})
            raise
        except Exception as exc:
            message = exc.message if isinstance(exc, ChatwireError) else f"generation failed: {exc!r}"[:500]
            log.warning("generation failed", extra={"model": model, "error": message})
            await emit({"type": "chat:message:error", "data": {"error": {"content": message}}})
            await emit({"type": "chat:completion", "data": {"done": True, "error": {"content": message}}})
        finally:
            await emit({"type": "chat:active", "data": {"active": False}})

    async def stop(self, task_id: str, user: User) -> bool:
        """Stop a generation of `user` (admins may stop any)."""
        task = self.tasks.get(task_id)
        if task is not None and task.user_id != user.id and user.role != "admin":
            raise not_found("task")
        stopped = await self.tasks.stop(task_id, user_id=user.id, admin=user.role == "admin")
        if not stopped:
            raise not_found("task")
        return True

    def task_ids_for_chat(self, chat_id: str, user: User) -> list[str]:
        return [
            t.task_id for t in self.tasks.for_chat(chat_id) if t.user_id == user.id or user.role == "admin"
        ]

    async def close(self) -> None:
        await self.tasks.close()
        if self.upstream is not None:
            await self.upstream.close()
