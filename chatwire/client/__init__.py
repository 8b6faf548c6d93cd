"""The Python client SDK: connect with a token, typed handlers for `events` and `events:channel`, answers to
event calls, and chat state rebuilt from the stream by the same reducer the server persists with.
`chatwire.client.server` has the server-side client (API key) and the Redis emitter.

    client = ChatwireClient("http://127.0.0.1:8080", token)
    client.on_call("confirmation", lambda ev: True)
    chat = client.track(chat_id)
    await client.connect()
    ...
    await client.wait_done(chat_id, message_id)
    print(chat.messages[message_id]["content"])
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import socketio

from chatwire.client.recovery import MAX_EVENT_BYTES
from chatwire.client.rest import ChatwireHTTP
from chatwire.services.reducer import ChatState, apply_event, new_message

log = logging.getLogger("chatwire.client")

__all__ = [
    "ChannelEvent",
    "ChatEvent",
    "ChatState",
    "ChatwireClient",
    "ChatwireHTTP",
    "apply_event",
    "new_message",
]


@dataclass(frozen=True)
class ChatEvent:
    """One `events` item: `{chat_id, message_id, data: {type, data}}`."""

    chat_id: str | None
    message_id: str | None
    type: str
    data: Any
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def parse(cls, payload: Any) -> ChatEvent | None:
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
            return None
        inner = payload["data"]
        return cls(
            payload.get("chat_id"),
            payload.get("message_id"),
            str(inner.get("type")),
            inner.get("data"),
            payload,
        )

    @property
    def ends_message(self) -> bool:
        """True for the event that closes a message (`chat:completion` with done, or a cancel)."""
        if self.type == "chat:tasks:cancel":
            return True
        return self.type == "chat:completion" and isinstance(self.data, dict) and bool(self.data.get("done"))


@dataclass(frozen=True)
class ChannelEvent:
    """One `events:channel` item: `{channel_id, message_id, data: {type, data}, user}`."""

    channel_id: str
    message_id: str | None
    type: str
    data: Any
    user: dict[str, Any] | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def parse(cls, payload: Any) -> ChannelEvent | None:
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
            return None
        inner = payload["data"]
        return cls(
            str(payload.get("channel_id")),
            payload.get("message_id"),
            str(inner.get("type")),
            inner.get("data"),
            payload.get("user"),
            payload,
        )


ChatHandler = Callable[[ChatEvent], Any]
ChannelHandler = Callable[[ChannelEvent], Any]
CallHandler = Callable[[ChatEvent], Any]


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class ChatwireClient:
    """A chatwire session: one Socket.IO connection authenticated with a user's token."""

    def __init__(self, url: str, token: str, *, reconnection: bool = True) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.sio = socketio.AsyncClient(
            reconnection=reconnection,
            reconnection_delay=1,
            reconnection_delay_max=5,
            websocket_extra_options={"max_msg_size": MAX_EVENT_BYTES},
        )
        self.user: dict[str, Any] | None = None
        self._chat_handlers: list[ChatHandler] = []
        self._channel_handlers: list[ChannelHandler] = []
        self._call_handlers: dict[str, CallHandler] = {}
        self._chats: dict[str, ChatState] = {}
        self._changed = asyncio.Condition()
        self._join_task: asyncio.Task[None] | None = None
        self.sio.on("events", self._on_events)
        self.sio.on("events:channel", self._on_channel)
        self.sio.on("connect", self._on_connect)

    @property
    def sid(self) -> str | None:
        """This session's id (what a generation request passes as `session_id`)."""
        return self.sio.get_sid()

    async def connect(self, timeout: float = 10) -> ChatwireClient:
        """Connect and join the user's rooms (again after every automatic reconnect)."""
        await self.sio.connect(
            self.url,
            auth={"token": self.token},
            socketio_path="ws/socket.io",
            transports=["websocket"],
            wait_timeout=timeout,
        )
        if self._join_task is not None:
            await asyncio.wait_for(asyncio.shield(self._join_task), timeout)
        return self

    async def _on_connect(self, *_: Any) -> None:
        # The ack of user-join arrives through the read loop this handler may run on: join from a task.
        self._join_task = asyncio.create_task(self._join())

    async def _join(self) -> None:
        try:
            ack = await self.sio.call("user-join", {"auth": {"token": self.token}}, timeout=10)
        except Exception as exc:
            log.warning("user-join failed: %r", exc)
            return
        if isinstance(ack, dict) and "error" not in ack:
            self.user = ack
        else:
            log.warning("user-join refused: %s", ack)

    async def close(self) -> None:
        await self.sio.disconnect()

    async def __aenter__(self) -> ChatwireClient:
        return await self.connect()

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def on_event(self, handler: ChatHandler) -> ChatHandler:
        """Call `handler(ChatEvent)` for every `events` item (sync or async); usable as a decorator."""
        self._chat_handlers.append(handler)
        return handler

    def on_channel_event(self, handler: ChannelHandler) -> ChannelHandler:
        """Call `handler(ChannelEvent)` for every `events:channel` item."""
        self._channel_handlers.append(handler)
        return handler

    def on_call(self, type: str, handler: CallHandler) -> None:
        """Answer event calls of `type` (`confirmation`, `input`, `execute`, ...) with `handler(ChatEvent)`."""
        self._call_handlers[type] = handler

    def track(self, chat_id: str) -> ChatState:
        """Rebuild this chat from its events, exactly as the server persists it (same reducer)."""
        state = self._chats.get(chat_id)
        if state is None:
            state = self._chats[chat_id] = ChatState(chat_id)
        return state

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 30) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    async def wait_done(self, chat_id: str, message_id: str, timeout: float = 60) -> dict[str, Any]:
        """Wait until a tracked message is done; returns its rebuilt state."""
        state = self.track(chat_id)
        await self.wait_for(lambda: bool(state.messages.get(message_id, {}).get("done")), timeout)
        return state.messages[message_id]

    async def _on_events(self, payload: Any, *_extra: Any) -> Any:
        # Extra arguments (a recovery offset) are accepted and ignored here.
        event = ChatEvent.parse(payload)
        if event is None:
            return None
        call = self._call_handlers.get(event.type)
        if call is not None:
            try:
                return await _maybe_await(call(event))
            except Exception:
                log.exception("event call handler failed")
                return {"error": "client handler failed"}
        if event.chat_id is not None and event.chat_id in self._chats:
            self._chats[event.chat_id].apply(payload)
        for handler in self._chat_handlers:
            try:
                await _maybe_await(handler(event))
            except Exception:
                log.exception("events handler failed")
        async with self._changed:
            self._changed.notify_all()
        return None

    async def _on_channel(self, payload: Any, *_extra: Any) -> None:
        event = ChannelEvent.parse(payload)
        if event is None:
            return
        for handler in self._channel_handlers:
            try:
                await _maybe_await(handler(event))
            except Exception:
                log.exception("events:channel handler failed")
        async with self._changed:
            self._changed.notify_all()
