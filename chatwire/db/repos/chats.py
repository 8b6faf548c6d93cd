"""Chats and their messages. Messages are rows of their own: streaming touches one row, never the whole chat."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, update

from chatwire.db.engine import Database
from chatwire.db.models import Chat, ChatMessage
from chatwire.errors import ChatwireError, ErrorCode
from chatwire.util import new_id, now_s

# Message fields kept in columns; everything else a client sends lives in `extra` and round-trips unchanged.
_COLUMN_FIELDS = {
    "id": "id",
    "parentId": "parent_id",
    "role": "role",
    "content": "content",
    "model": "model",
    "done": "done",
    "statusHistory": "status_history",
    "sources": "sources",
    "files": "files",
    "embeds": "embeds",
    "followUps": "follow_ups",
    "error": "error",
    "usage": "usage",
}


@dataclass
class ChatRecord:
    chat: Chat
    messages: list[ChatMessage]


def message_to_json(m: ChatMessage) -> dict[str, Any]:
    """A stored message in Open WebUI's message shape."""
    out: dict[str, Any] = dict(m.extra or {})
    out.update(
        {
            "id": m.id,
            "parentId": m.parent_id,
            "role": m.role,
            "content": m.content,
            "done": m.done,
        }
    )
    if m.model is not None:
        out["model"] = m.model
    for key, col in (
        ("statusHistory", "status_history"),
        ("sources", "sources"),
        ("files", "files"),
        ("embeds", "embeds"),
        ("followUps", "follow_ups"),
        ("error", "error"),
        ("usage", "usage"),
    ):
        value = getattr(m, col)
        if value is not None:
            out[key] = value
    out.setdefault("timestamp", m.created_at)
    return out


_MAX_TIMESTAMP = 2**62  # fits BIGINT with room to spare


def _text(value: Any, what: str, limit: int | None = None) -> str:
    """A string column value: refused when not a string, too long, or holding NUL (PostgreSQL refuses it)."""
    if not isinstance(value, str):
        raise ChatwireError(ErrorCode.INVALID_PAYLOAD, f"{what} must be a string")
    if limit is not None and len(value) > limit:
        raise ChatwireError(ErrorCode.INVALID_PAYLOAD, f"{what} is longer than {limit} characters")
    if "\x00" in value:
        raise ChatwireError(ErrorCode.INVALID_PAYLOAD, f"{what} contains a NUL character")
    return value


def _message_id(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return _text(value, what, 64) or None


def message_from_json(chat_id: str, data: dict[str, Any], position: int, now: int) -> ChatMessage:
    """Build a row from an Open WebUI message object; values that the columns cannot hold are refused."""
    cols: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in data.items():
        if key in _COLUMN_FIELDS:
            cols[_COLUMN_FIELDS[key]] = value
        else:
            extra[key] = value
    content = cols.get("content")
    cols["content"] = _text("" if content is None else content, "message content")
    cols["done"] = bool(cols.get("done", True))
    cols["role"] = _text(cols.get("role") or "user", "message role", 32)
    if cols.get("model") is not None:
        cols["model"] = _text(cols["model"], "message model", 255)
    cols["id"] = _message_id(cols.get("id"), "message id") or new_id()
    cols["parent_id"] = _message_id(cols.get("parent_id"), "message parentId")
    ts = extra.get("timestamp")
    created = int(ts) if isinstance(ts, int | float) and 0 <= ts < _MAX_TIMESTAMP else now
    return ChatMessage(
        chat_id=chat_id, position=position, extra=extra or None, created_at=created, updated_at=now, **cols
    )


class ChatRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, user_id: str, chat: dict[str, Any]) -> ChatRecord:
        now = now_s()
        chat_id = new_id()
        found = chat.get("history")
        history: dict[str, Any] = found if isinstance(found, dict) else {}
        found = history.get("messages")
        raw_messages: dict[str, Any] = found if isinstance(found, dict) else {}
        extra = {k: v for k, v in chat.items() if k not in ("history", "messages", "title", "id")}
        row = Chat(
            id=chat_id,
            user_id=user_id,
            title=_text(chat.get("title") or "New Chat", "chat title", 1024),
            current_id=_message_id(history.get("currentId"), "history currentId"),
            extra=extra or None,
            created_at=now,
            updated_at=now,
        )
        messages: list[ChatMessage] = []
        for position, (mid, msg) in enumerate(raw_messages.items()):
            if isinstance(msg, dict):
                messages.append(message_from_json(chat_id, {**msg, "id": msg.get("id", mid)}, position, now))
        if len({m.id for m in messages}) != len(messages):
            raise ChatwireError(ErrorCode.INVALID_PAYLOAD, "two messages of the chat have the same id")
        async with self.db.session() as s:
            s.add(row)
            await s.flush()
            s.add_all(messages)
        return ChatRecord(row, messages)

    async def get(self, chat_id: str) -> Chat | None:
        async with self.db.read() as s:
            return await s.get(Chat, chat_id)

    async def get_with_messages(self, chat_id: str) -> ChatRecord | None:
        async with self.db.read() as s:
            chat = await s.get(Chat, chat_id)
            if chat is None:
                return None
            q = select(ChatMessage).where(ChatMessage.chat_id == chat_id).order_by(ChatMessage.position)
            return ChatRecord(chat, list((await s.execute(q)).scalars()))

    async def list_for_user(self, user_id: str, skip: int = 0, limit: int = 100) -> list[Chat]:
        async with self.db.read() as s:
            q = (
                select(Chat)
                .where(Chat.user_id == user_id)
                .order_by(Chat.updated_at.desc(), Chat.id)
                .offset(skip)
                .limit(limit)
            )
            return list((await s.execute(q)).scalars())

    async def set_last_read(self, chat_id: str, at: int) -> None:
        async with self.db.session() as s:
            await s.execute(update(Chat).where(Chat.id == chat_id).values(last_read_at=at))

    async def update_chat(self, chat_id: str, **values: Any) -> None:
        async with self.db.session() as s:
            await s.execute(update(Chat).where(Chat.id == chat_id).values(updated_at=now_s(), **values))

    async def add_message(self, chat_id: str, data: dict[str, Any]) -> ChatMessage:
        """Append a message row at the end of the chat and make it current."""
        now = now_s()
        async with self.db.session() as s:
            q = select(func.coalesce(func.max(ChatMessage.position), -1)).where(
                ChatMessage.chat_id == chat_id
            )
            position = int((await s.execute(q)).scalar_one()) + 1
            msg = message_from_json(chat_id, data, position, now)
            s.add(msg)
            await s.execute(update(Chat).where(Chat.id == chat_id).values(current_id=msg.id, updated_at=now))
        return msg

    async def get_message(self, chat_id: str, message_id: str) -> ChatMessage | None:
        async with self.db.read() as s:
            return await s.get(ChatMessage, (chat_id, message_id))

    async def delete(self, chat_id: str) -> None:
        async with self.db.session() as s:
            await s.execute(delete(ChatMessage).where(ChatMessage.chat_id == chat_id))
            await s.execute(delete(Chat).where(Chat.id == chat_id))


def chat_to_json(record: ChatRecord) -> dict[str, Any]:
    """A chat in Open WebUI's JSON shape: `chat.history.messages[id]` plus `chat.messages` along currentId."""
    chat = record.chat
    messages = {m.id: message_to_json(m) for m in record.messages}
    for m in messages.values():
        m.setdefault("childrenIds", [])
    for m in messages.values():
        parent = messages.get(m.get("parentId") or "")
        if parent is not None and m["id"] not in parent["childrenIds"]:
            parent["childrenIds"].append(m["id"])
    current = chat.current_id or (record.messages[-1].id if record.messages else None)
    path: list[dict[str, Any]] = []
    seen: set[str] = set()
    cursor = messages.get(current or "")
    while cursor is not None and cursor["id"] not in seen:
        seen.add(cursor["id"])
        path.append(cursor)
        cursor = messages.get(cursor.get("parentId") or "")
    body: dict[str, Any] = dict(chat.extra or {})
    body.update(
        {
            "id": chat.id,
            "title": chat.title,
            "history": {"messages": messages, "currentId": current},
            "messages": list(reversed(path)),
        }
    )
    return {
        "id": chat.id,
        "user_id": chat.user_id,
        "title": chat.title,
        "chat": body,
        "meta": chat.meta or {},
        "last_read_at": chat.last_read_at,
        "created_at": chat.created_at,
        "updated_at": chat.updated_at,
    }


# Message fields the event writer sets, mapped to their columns (content is written separately).
PATCH_COLUMNS = {
    "statusHistory": "status_history",
    "sources": "sources",
    "files": "files",
    "embeds": "embeds",
    "followUps": "follow_ups",
    "error": "error",
    "usage": "usage",
    "done": "done",
}


class _NothingWritten(Exception):
    """Rolls back a patch whose precondition failed."""


class MessageStore:
    """The writes of the chat event writer: one row per message, content appended in SQL, never the whole chat."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def load_or_create(self, chat_id: str, message_id: str) -> ChatMessage | None:
        """The message row, created empty (as the answer to the chat's current message) if missing.

        None when the chat itself does not exist: there is nothing to attach the message to.
        """
        existing = await self._get(chat_id, message_id)
        if existing is not None:
            return existing
        now = now_s()
        async with self.db.session() as s:
            row = await s.get(ChatMessage, (chat_id, message_id))
            if row is not None:
                return row
            chat = await s.get(Chat, chat_id)
            if chat is None:
                return None
            q = select(func.coalesce(func.max(ChatMessage.position), -1)).where(
                ChatMessage.chat_id == chat_id
            )
            position = int((await s.execute(q)).scalar_one()) + 1
            parent = chat.current_id
            if parent is not None and await s.get(ChatMessage, (chat_id, parent)) is None:
                parent = None
            row = ChatMessage(
                chat_id=chat_id,
                id=message_id,
                parent_id=parent,
                role="assistant",
                content="",
                done=False,
                position=position,
                created_at=now,
                updated_at=now,
            )
            s.add(row)
            await s.execute(
                update(Chat).where(Chat.id == chat_id).values(current_id=message_id, updated_at=now)
            )
        return row

    async def _get(self, chat_id: str, message_id: str) -> ChatMessage | None:
        async with self.db.read() as s:
            return await s.get(ChatMessage, (chat_id, message_id))

    async def write_patch(
        self,
        chat_id: str,
        message_id: str,
        *,
        suffix: str | None = None,
        expect_length: int = 0,
        content: str | None = None,
        values: dict[str, Any] | None = None,
    ) -> bool:
        """One UPDATE of the message: `content || suffix` (only if the stored content still has
        `expect_length` characters, so a retry after an unknown outcome never appends twice), or `content`
        set in full, plus column `values`. False when the length check failed and nothing was written."""
        now = now_s()
        cols: dict[str, Any] = {PATCH_COLUMNS[k]: v for k, v in (values or {}).items()}
        cols["updated_at"] = now
        where = [ChatMessage.chat_id == chat_id, ChatMessage.id == message_id]
        if suffix:
            cols["content"] = ChatMessage.content + suffix
            where.append(func.length(ChatMessage.content) == expect_length)
        elif content is not None:
            cols["content"] = content
        try:
            async with self.db.session() as s:
                result = await s.execute(update(ChatMessage).where(*where).values(**cols))
                if result.rowcount == 0:  # type: ignore[attr-defined]
                    raise _NothingWritten
        except _NothingWritten:
            return False
        return True

    async def update_chat(self, chat_id: str, chat_values: dict[str, Any]) -> bool:
        """Set the chat's `title` and/or `tags` (kept in `meta.tags`); False if the chat does not exist."""
        values: dict[str, Any] = {"updated_at": now_s()}
        if "title" in chat_values:
            values["title"] = str(chat_values["title"])[:1024]
        async with self.db.session() as s:
            chat = await s.get(Chat, chat_id)
            if chat is None:
                return False
            if "tags" in chat_values:
                meta = dict(chat.meta or {})
                meta["tags"] = chat_values["tags"]
                values["meta"] = meta
            await s.execute(update(Chat).where(Chat.id == chat_id).values(**values))
        return True
