"""The chat event reducer: how one `events` item changes a message, exactly by docs/PROTOCOL.md section 4.

Pure functions, no I/O. The server's persistence and the Python SDK (`chatwire.client`) both reduce with this
module, so what a client rebuilds from the stream and what the database holds agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

# Message fields in Open WebUI's shape that the reducer may change.
CONTENT = "content"
LIST_FIELDS = ("statusHistory", "sources", "files", "embeds")
SCALAR_FIELDS = ("done", "error", "usage", "followUps", "outcome")

# How an answer ended (`message.outcome`): it finished, a user stopped it, the server stopped or crashed
# mid-stream (marked at the next start), or the model failed (`message.error` says why).
OUTCOMES = ("done", "stopped", "interrupted", "failed")

_APPEND = frozenset({"message", "chat:message:delta"})
_REPLACE = frozenset({"replace", "chat:message"})
_EMBEDS = frozenset({"embeds", "chat:message:embeds"})
_FILES = frozenset({"files", "chat:message:files"})
_SOURCES = frozenset({"source", "citation"})

# Chat ids whose events are delivered but never stored.
UNPERSISTED_PREFIXES = ("local:", "temporary:", "channel:")


def is_persisted_chat(chat_id: str | None) -> bool:
    """Whether events of this chat are stored (local, temporary and channel chats are not)."""
    return bool(chat_id) and not str(chat_id).startswith(UNPERSISTED_PREFIXES)


@dataclass
class Change:
    """What one event changed: message fields, and chat-level fields (`title`, `tags`)."""

    fields: set[str] = field(default_factory=set)
    chat: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.fields or self.chat)


def new_message(message_id: str, role: str = "assistant") -> dict[str, Any]:
    """An empty message in Open WebUI's shape, the state before the first event."""
    return {"id": message_id, "role": role, "content": "", "done": False}


def _key(item: Any) -> bytes:
    try:
        return orjson.dumps(item, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return repr(item).encode()


def _accumulate_into(message: dict[str, Any], name: str, items: Any, change: Change) -> None:
    """Append to `message[name]` the `items` not already present, in order (de-duplicated by value)."""
    if not isinstance(items, list):
        return
    out = list(message.get(name) or [])
    seen = {_key(x) for x in out}
    for item in items:
        k = _key(item)
        if k not in seen:
            seen.add(k)
            out.append(item)
    if len(out) != len(message.get(name) or []) or name not in message:
        message[name] = out
        change.fields.add(name)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return "" if value is None else str(value)


def apply_event(message: dict[str, Any], event: dict[str, Any]) -> Change:
    """Apply one event `{type, data}` to `message` in place; returns what changed.

    Unknown types and malformed data change nothing (they are still delivered to clients).
    """
    change = Change()
    if not isinstance(event, dict):
        return change
    kind = event.get("type")
    data = event.get("data")
    d: dict[str, Any] = data if isinstance(data, dict) else {}

    if kind in _APPEND:
        piece = _text(d.get("content"))
        if piece:
            message[CONTENT] = _text(message.get(CONTENT)) + piece
            change.fields.add(CONTENT)
    elif kind in _REPLACE:
        message[CONTENT] = _text(d.get("content"))
        change.fields.add(CONTENT)
    elif kind == "status":
        if isinstance(data, dict):
            message["statusHistory"] = [*(message.get("statusHistory") or []), data]
            change.fields.add("statusHistory")
    elif kind in _EMBEDS:
        _accumulate_into(message, "embeds", d.get("embeds"), change)
    elif kind in _FILES:
        _accumulate_into(message, "files", d.get("files"), change)
    elif kind in _SOURCES:
        if isinstance(data, dict) and not d.get("type"):
            message["sources"] = [*(message.get("sources") or []), data]
            change.fields.add("sources")
    elif kind == "chat:completion":
        _completion(message, d, change)
    elif kind == "chat:message:error":
        message["error"] = d.get("error", data)
        change.fields.add("error")
    elif kind == "chat:message:follow_ups":
        follow_ups = d.get("follow_ups", d.get("followUps"))
        if isinstance(follow_ups, list):
            message["followUps"] = follow_ups
            change.fields.add("followUps")
    elif kind == "chat:title":
        title = data if isinstance(data, str) else d.get("title")
        if isinstance(title, str) and title:
            change.chat["title"] = title
    elif kind == "chat:tags":
        tags = data if isinstance(data, list) else d.get("tags")
        if isinstance(tags, list):
            change.chat["tags"] = tags
    elif kind == "chat:tasks:cancel":
        message["done"] = True
        change.fields.add("done")
        if not message.get("outcome"):
            message["outcome"] = "stopped"
            change.fields.add("outcome")
    return change


def _completion(message: dict[str, Any], d: dict[str, Any], change: Change) -> None:
    if "content" in d and d["content"] is not None:
        message[CONTENT] = _text(d["content"])
        change.fields.add(CONTENT)
    if isinstance(d.get("sources"), list):
        message["sources"] = d["sources"]
        change.fields.add("sources")
    if d.get("usage") is not None:
        message["usage"] = d["usage"]
        change.fields.add("usage")
    if d.get("error") is not None:
        message["error"] = d["error"]
        change.fields.add("error")
    if d.get("done"):
        message["done"] = True
        change.fields.add("done")
        outcome = d.get("outcome")
        if outcome in OUTCOMES:
            message["outcome"] = outcome
            change.fields.add("outcome")
        elif not message.get("outcome"):
            message["outcome"] = "failed" if message.get("error") is not None else "done"
            change.fields.add("outcome")
    if isinstance(d.get("title"), str) and d["title"]:
        change.chat["title"] = d["title"]


class ChatState:
    """A chat rebuilt from its events: the messages by id plus `title` and `tags` (what the server stores)."""

    def __init__(self, chat_id: str) -> None:
        self.chat_id = chat_id
        self.title: str | None = None
        self.tags: list[Any] | None = None
        self.messages: dict[str, dict[str, Any]] = {}

    def message(self, message_id: str) -> dict[str, Any]:
        msg = self.messages.get(message_id)
        if msg is None:
            msg = self.messages[message_id] = new_message(message_id)
        return msg

    def apply(self, payload: dict[str, Any]) -> Change:
        """Apply one `events` payload `{chat_id, message_id, data: {type, data}}` of this chat."""
        message_id = payload.get("message_id")
        event = payload.get("data")
        if not isinstance(event, dict):
            return Change()
        if not message_id:
            change = apply_event({}, event)
            change.fields.clear()
        else:
            change = apply_event(self.message(str(message_id)), event)
        if "title" in change.chat:
            self.title = change.chat["title"]
        if "tags" in change.chat:
            self.tags = change.chat["tags"]
        return change
