"""Chats and their messages. Messages are rows of their own: streaming touches one row, never the whole chat."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, select, update

from chatwire.db.engine import Database
from chatwire.db.models import Chat, ChatMessage
from chatwire.db.sqlite_writer import RowCodec
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
    "outcome": "outcome",
}

# The answer writer's two UPDATEs, built once: building them per flush (expressions such as
# `func.length(content) == n` with the values inlined) made a graph of SQLAlchemy objects with reference cycles
# on every write, which only the cyclic collector frees. The SET clause's other columns come from the
# parameters' keys (Core adds a column named in the parameters to SET), so one statement serves every
# combination of dirty fields; the compiled cache keeps one entry per combination.
_MESSAGES = cast(Table, ChatMessage.__table__)
_WHERE_MESSAGE = (
    _MESSAGES.c.chat_id == bindparam("w_chat_id"),
    _MESSAGES.c.id == bindparam("w_message_id"),
)
_APPEND_CONTENT = (
    update(_MESSAGES)
    .where(*_WHERE_MESSAGE, func.length(_MESSAGES.c.content) == bindparam("w_expect_length"))
    .values(content=_MESSAGES.c.content + bindparam("w_suffix", type_=_MESSAGES.c.content.type))
)
_SET_COLUMNS = update(_MESSAGES).where(*_WHERE_MESSAGE)


def _core_statement(patch: MessagePatch, now: int) -> tuple[Any, dict[str, Any]]:
    """The SQLAlchemy Core UPDATE of one patch (see MessagePatch) and its parameters."""
    params: dict[str, Any] = {PATCH_COLUMNS[k]: v for k, v in (patch.values or {}).items()}
    params.update(updated_at=now, w_chat_id=patch.chat_id, w_message_id=patch.message_id)
    if patch.suffix:
        params.update(w_suffix=patch.suffix, w_expect_length=patch.expect_length)
        return _APPEND_CONTENT, params
    if patch.content is not None:
        params["content"] = patch.content
    return _SET_COLUMNS, params


# add_turn's `decide`: (the chat, its messages by position) -> (user_message, parent_id) to store.
DecideTurn = Callable[[Chat, list[ChatMessage]], tuple[dict[str, Any] | None, str | None]]


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
        ("outcome", "outcome"),
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
        if key == "childrenIds":
            continue  # derived from the parent links when read
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
        # Called with the empty answer row each `add_turn` committed (the message writer starts from it instead
        # of reading the row back at its first write).
        self.answer_hooks: list[Callable[[ChatMessage], None]] = []
        self._row_codecs: _Codecs | None = None

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

    async def update(self, chat_id: str, chat: dict[str, Any]) -> ChatRecord | None:
        """Merge a client's chat object into the stored chat (Open WebUI's `POST /chats/{id}`).

        `title` and the other top-level keys replace theirs; `history.messages` are upserted by id and stored
        messages the client did not send are kept. An answer still streaming (stored or sent with `done: false`)
        keeps its stored row: the event writer owns it until it ends. None when the chat does not exist.
        """
        now = now_s()
        found = chat.get("history")
        history: dict[str, Any] | None = found if isinstance(found, dict) else None
        found = (history or {}).get("messages")
        incoming: dict[str, Any] = found if isinstance(found, dict) else {}
        async with self.db.session() as s:
            row = await s.get(Chat, chat_id)
            if row is None:
                return None
            q = select(ChatMessage).where(ChatMessage.chat_id == chat_id)
            stored = {m.id: m for m in (await s.execute(q)).scalars()}
            position = max((m.position for m in stored.values()), default=-1) + 1
            for mid, msg in incoming.items():
                if not isinstance(msg, dict):
                    continue
                new = message_from_json(chat_id, {**msg, "id": msg.get("id", mid)}, position, now)
                old = stored.get(new.id)
                if old is None:
                    s.add(new)
                    stored[new.id] = new
                    position += 1
                    continue
                if old.role == "assistant" and (not old.done or msg.get("done") is False):
                    continue  # streaming: the writer's row wins
                for key in msg:
                    col = _COLUMN_FIELDS.get(key)
                    if col is not None and col != "id":
                        setattr(old, col, getattr(new, col))
                if new.extra:
                    old.extra = {**(old.extra or {}), **new.extra}
                old.updated_at = now
            values: dict[str, Any] = {"updated_at": now}
            if "title" in chat:
                values["title"] = _text(chat.get("title") or "New Chat", "chat title", 1024)
            if history is not None and "currentId" in history:
                current = _message_id(history.get("currentId"), "history currentId")
                if current is None or current in stored:
                    values["current_id"] = current
            extra = {k: v for k, v in chat.items() if k not in ("history", "messages", "title", "id")}
            if extra:
                values["extra"] = {**(row.extra or {}), **extra}
            await s.flush()
            await s.execute(update(Chat).where(Chat.id == chat_id).values(**values))
        return await self.get_with_messages(chat_id)

    async def add_turn(
        self,
        chat_id: str,
        *,
        user_message: dict[str, Any] | None,
        parent_id: str | None,
        assistant_id: str,
        model: str,
        decide: DecideTurn | None = None,
    ) -> list[ChatMessage]:
        """Store one turn before its answer streams: the user message (unless stored already) and an empty
        assistant answer under it, which becomes the chat's current message. Returns the path from the root to
        the user message (or to the answer's parent when there is no user message).

        `decide`: called with the chat and its messages as stored (by position) before anything is written, in
        the same transaction; it returns the `(user_message, parent_id)` to store (instead of the arguments) or
        raises to refuse. A caller that must look at the chat to know the turn reads it once, not twice. It may
        run in the database's own thread (SQLite): it must only look at what it is given and its own state.

        Refused (`conflict`) when the answer id is taken by a message that is not an empty unfinished answer, when
        the user message id is taken by another role, or when the parent does not exist.

        On an SQLite file the whole turn is one transaction of the direct lane (see sqlite_writer.py): this is
        the start of every generation, and through the ORM and the async adapter it cost ~2.5 ms of CPU."""
        now = now_s()
        request = _TurnRequest(chat_id, user_message, parent_id, assistant_id, model, decide, now)
        lane = self.db.sqlite_writer
        if lane is not None:
            codecs = self._codecs()
            answer, path = await lane.run(lambda conn: _add_turn_sqlite(conn, codecs, request))
        else:
            async with self.db.session() as s:
                chat = await s.get(Chat, chat_id)
                if chat is None:
                    raise ChatwireError(ErrorCode.NOT_FOUND, "chat not found")
                q = select(ChatMessage).where(ChatMessage.chat_id == chat_id).order_by(ChatMessage.position)
                turn = _plan_turn(request, chat, list((await s.execute(q)).scalars()))
                s.add_all(turn.new)  # a reused answer is in the session: its changed attributes are written
                await s.execute(
                    update(Chat).where(Chat.id == chat_id).values(current_id=assistant_id, updated_at=now)
                )
            answer, path = turn.answer, turn.path
        for hook in self.answer_hooks:
            hook(answer)
        return path

    def _codecs(self) -> _Codecs:
        if self._row_codecs is None:
            dialect = self.db.engine.dialect
            self._row_codecs = _Codecs(RowCodec(Chat, dialect), RowCodec(ChatMessage, dialect))
        return self._row_codecs

    async def mark_interrupted(self, older_than: int | None = None, chat_id: str | None = None) -> int:
        """End every unfinished answer (of `chat_id`, or all) as `interrupted`, keeping its content (at start:
        nobody streams it any more). With `older_than`, only answers not written since then (others may be
        streaming them)."""
        where = [ChatMessage.role == "assistant", ChatMessage.done.is_(False)]
        if chat_id is not None:
            where.append(ChatMessage.chat_id == chat_id)
        if older_than is not None:
            where.append(ChatMessage.updated_at < older_than)
        async with self.db.session() as s:
            result = await s.execute(
                update(ChatMessage).where(*where).values(done=True, outcome="interrupted", updated_at=now_s())
            )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def tags_of_user(self, user_id: str) -> list[str]:
        """The distinct tags (`meta.tags`) of the user's chats, in first-seen order."""
        async with self.db.read() as s:
            metas = (await s.execute(select(Chat.meta).where(Chat.user_id == user_id))).scalars()
            out: dict[str, None] = {}
            for meta in metas:
                for tag in (meta or {}).get("tags") or []:
                    if isinstance(tag, str) and tag:
                        out.setdefault(tag, None)
            return list(out)

    async def delete(self, chat_id: str) -> None:
        async with self.db.session() as s:
            await s.execute(delete(ChatMessage).where(ChatMessage.chat_id == chat_id))
            await s.execute(delete(Chat).where(Chat.id == chat_id))


@dataclass(frozen=True, slots=True)
class _TurnRequest:
    """The arguments of one `ChatRepo.add_turn`."""

    chat_id: str
    user_message: dict[str, Any] | None
    parent_id: str | None
    assistant_id: str
    model: str
    decide: DecideTurn | None
    now: int


@dataclass(slots=True)
class _Turn:
    """What a turn stores, decided from the chat as read: the new rows (in insertion order), the answer (new or
    reused: then its changed parent, model and time are to be written) and the path to the question."""

    new: list[ChatMessage]
    answer: ChatMessage
    reused: bool
    path: list[ChatMessage]


def _plan_turn(request: _TurnRequest, chat: Chat, found: list[ChatMessage]) -> _Turn:
    """Decide one turn from the chat and its messages as stored (by position); raises to refuse (see add_turn).
    No I/O: both storage paths of add_turn share it."""
    rows = {m.id: m for m in found}
    user_message, parent_id = request.user_message, request.parent_id
    if request.decide is not None:
        user_message, parent_id = request.decide(chat, found)
    now = request.now
    position = max((m.position for m in found), default=-1) + 1
    new: list[ChatMessage] = []
    anchor = parent_id
    if user_message is not None:
        uid = _message_id(user_message.get("id"), "user message id") or new_id()
        existing = rows.get(uid)
        if existing is not None:
            if existing.role != "user":
                raise ChatwireError(ErrorCode.CONFLICT, "the user message id belongs to another message")
        else:
            parent = _message_id(user_message.get("parentId"), "message parentId") or parent_id
            if parent is not None and parent not in rows:
                raise ChatwireError(ErrorCode.CONFLICT, "the parent message does not exist")
            data = {k: v for k, v in user_message.items() if k not in ("childrenIds", "done")}
            data.update(id=uid, parentId=parent, role="user")
            data.setdefault("timestamp", now)
            existing = message_from_json(request.chat_id, data, position, now)
            new.append(existing)
            rows[uid] = existing
            position += 1
        anchor = uid
    elif anchor is not None and anchor not in rows:
        raise ChatwireError(ErrorCode.CONFLICT, "the parent message does not exist")
    answer = rows.get(request.assistant_id)
    reused = answer is not None
    if answer is not None:
        if answer.role != "assistant" or answer.done or answer.content:
            raise ChatwireError(ErrorCode.CONFLICT, "the answer id belongs to another message")
        answer.parent_id, answer.model, answer.updated_at = anchor, request.model, now
    else:
        answer = ChatMessage(
            chat_id=request.chat_id,
            id=request.assistant_id,
            parent_id=anchor,
            role="assistant",
            content="",
            model=request.model,
            done=False,
            position=position,
            extra={"timestamp": now},
            created_at=now,
            updated_at=now,
        )
        new.append(answer)
    path: list[ChatMessage] = []
    seen: set[str] = set()
    cursor = rows.get(anchor or "")
    while cursor is not None and cursor.id not in seen:
        seen.add(cursor.id)
        path.append(cursor)
        cursor = rows.get(cursor.parent_id or "")
    return _Turn(new, answer, reused, list(reversed(path)))


@dataclass(frozen=True, slots=True)
class _Codecs:
    chats: RowCodec[Chat]
    messages: RowCodec[ChatMessage]


def _add_turn_sqlite(
    conn: sqlite3.Connection, codecs: _Codecs, request: _TurnRequest
) -> tuple[ChatMessage, list[ChatMessage]]:
    """add_turn as one transaction of the SQLite direct lane (runs in its thread): read, plan, write."""
    row = conn.execute(f"{codecs.chats.select} WHERE id = ?", (request.chat_id,)).fetchone()
    if row is None:
        raise ChatwireError(ErrorCode.NOT_FOUND, "chat not found")
    found = [
        codecs.messages.load(r)
        for r in conn.execute(
            f"{codecs.messages.select} WHERE chat_id = ? ORDER BY position", (request.chat_id,)
        )
    ]
    turn = _plan_turn(request, codecs.chats.load(row), found)
    for message in turn.new:
        conn.execute(codecs.messages.insert, codecs.messages.dump(message))
    if turn.reused:
        answer = turn.answer
        conn.execute(
            f"UPDATE {_MESSAGES.name} SET parent_id = ?, model = ?, updated_at = ? WHERE chat_id = ? AND id = ?",
            (answer.parent_id, answer.model, answer.updated_at, answer.chat_id, answer.id),
        )
    conn.execute(
        f"UPDATE {Chat.__tablename__} SET current_id = ?, updated_at = ? WHERE id = ?",
        (request.assistant_id, request.now, request.chat_id),
    )
    return turn.answer, turn.path


def chat_to_json(record: ChatRecord) -> dict[str, Any]:
    """A chat in Open WebUI's JSON shape: `chat.history.messages[id]` plus `chat.messages` along currentId."""
    chat = record.chat
    messages = {m.id: message_to_json(m) for m in record.messages}
    for m in messages.values():
        m["childrenIds"] = []  # derived from the parent links, in insertion order
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
    "outcome": "outcome",
}


@dataclass(frozen=True, slots=True)
class MessagePatch:
    """One write of a message by the chat event writer: `content || suffix` (only if the stored content still has
    `expect_length` characters, so a retry after an unknown outcome never appends twice), or `content` set in
    full, plus column `values` (by message field name, see PATCH_COLUMNS)."""

    chat_id: str
    message_id: str
    suffix: str | None = None
    expect_length: int = 0
    content: str | None = None
    values: Mapping[str, Any] | None = None


class MessageStore:
    """The writes of the chat event writer: one row per message, content appended in SQL, never the whole chat.

    On an SQLite file the patches go through the database's direct lane (`Database.sqlite_writer`, plain sqlite3
    in a thread of its own: one event-loop round trip per transaction instead of several per statement through
    the async adapter), which is most of what a streamed answer costs the server; elsewhere through SQLAlchemy
    Core. Either way several patches share one transaction (`write_patches`)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # The direct lane's UPDATE per combination of written columns, and the columns' bind processors (the
        # same conversions SQLAlchemy applies, JSON encoding included, so both paths store the same values).
        self._sql: dict[tuple[bool, tuple[str, ...]], str] = {}
        dialect = db.engine.dialect
        self._bind: dict[str, Callable[[Any], Any] | None] = {
            col: _MESSAGES.c[col].type.bind_processor(dialect) for col in PATCH_COLUMNS.values()
        }

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
        """One patch (see MessagePatch) in a transaction of its own; False when the length check failed (or the
        row is gone) and nothing was written."""
        patch = MessagePatch(chat_id, message_id, suffix, expect_length, content, values)
        return (await self.write_patches([patch]))[0]

    async def write_patches(self, patches: Sequence[MessagePatch]) -> list[bool]:
        """The patches in order, in ONE transaction: for each, whether it was written (False: its length check
        failed or its row is gone, and it changed nothing). Raises if the transaction fails: then none is."""
        if not patches:
            return []
        now = now_s()
        writer = self.db.sqlite_writer
        if writer is not None:
            statements = [self._sqlite_statement(p, now) for p in patches]
            return await writer.run(lambda conn: [conn.execute(q, a).rowcount > 0 for q, a in statements])
        written: list[bool] = []
        async with self.db.session() as s:
            for patch in patches:
                statement, params = _core_statement(patch, now)
                result = await s.execute(statement, params)
                written.append(result.rowcount > 0)  # type: ignore[attr-defined]
        return written

    def _sqlite_statement(self, patch: MessagePatch, now: int) -> tuple[str, tuple[Any, ...]]:
        """The direct lane's UPDATE for one patch and its arguments."""
        columns = tuple(PATCH_COLUMNS[k] for k in patch.values or ())
        args: list[Any] = []
        for column, value in zip(columns, (patch.values or {}).values(), strict=True):
            bind = self._bind[column]
            args.append(value if bind is None else bind(value))
        append = bool(patch.suffix)
        if append:
            args.append(patch.suffix)
        elif patch.content is not None:
            columns = (*columns, "content")
            args.append(patch.content)
        args += [now, patch.chat_id, patch.message_id]
        if append:
            args.append(patch.expect_length)
        key = (append, columns)
        sql = self._sql.get(key)
        if sql is None:
            sets = [f"{c} = ?" for c in columns]
            if append:
                sets.append("content = content || ?")
            sql = (
                f"UPDATE {_MESSAGES.name} SET {', '.join(sets)}, updated_at = ? WHERE chat_id = ? AND id = ?"
                + (" AND length(content) = ?" if append else "")
            )
            self._sql[key] = sql
        return sql, tuple(args)

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
