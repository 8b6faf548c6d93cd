"""The reducer follows docs/PROTOCOL.md's type table, event by event."""

from __future__ import annotations

from typing import Any

import pytest

from chatwire.services.reducer import ChatState, apply_event, is_persisted_chat, new_message


def reduce(*events: dict[str, Any]) -> dict[str, Any]:
    message = new_message("m")
    for event in events:
        apply_event(message, event)
    return message


def test_deltas_append_and_replace_sets() -> None:
    m = reduce(
        {"type": "message", "data": {"content": "a"}},
        {"type": "chat:message:delta", "data": {"content": "b"}},
    )
    assert m["content"] == "ab"
    m = reduce(
        {"type": "message", "data": {"content": "a"}},
        {"type": "replace", "data": {"content": "X"}},
        {"type": "message", "data": {"content": "y"}},
    )
    assert m["content"] == "Xy"
    assert reduce({"type": "chat:message", "data": {"content": "Z"}})["content"] == "Z"


def test_status_appends_to_history() -> None:
    m = reduce(
        {"type": "status", "data": {"description": "one"}}, {"type": "status", "data": {"description": "two"}}
    )
    assert m["statusHistory"] == [{"description": "one"}, {"description": "two"}]


@pytest.mark.parametrize(
    ("kind", "key"),
    [
        ("embeds", "embeds"),
        ("chat:message:embeds", "embeds"),
        ("files", "files"),
        ("chat:message:files", "files"),
    ],
)
def test_embeds_and_files_accumulate_after_existing_deduplicated(kind: str, key: str) -> None:
    m = reduce(
        {"type": kind, "data": {key: [{"a": 1}, "x"]}},
        {"type": kind, "data": {key: ["x", {"a": 1}, "y"]}},
    )
    assert m[key] == [{"a": 1}, "x", "y"]


def test_sources_only_without_data_type() -> None:
    m = reduce(
        {"type": "source", "data": {"source": {"name": "s"}}},
        {"type": "citation", "data": {"source": {"name": "t"}}},
        {"type": "source", "data": {"type": "code_execution", "id": "c"}},
    )
    assert m["sources"] == [{"source": {"name": "s"}}, {"source": {"name": "t"}}]


def test_completion_fields() -> None:
    m = reduce(
        {"type": "message", "data": {"content": "partial"}},
        {"type": "chat:completion", "data": {"usage": {"t": 1}}},
    )
    assert m["content"] == "partial" and m["usage"] == {"t": 1} and m["done"] is False
    m = reduce(
        {"type": "message", "data": {"content": "partial"}},
        {
            "type": "chat:completion",
            "data": {"content": "full", "done": True, "error": {"content": "e"}, "sources": [1]},
        },
    )
    assert (
        m["content"] == "full"
        and m["done"] is True
        and m["error"] == {"content": "e"}
        and m["sources"] == [1]
    )
    change = apply_event(new_message("m"), {"type": "chat:completion", "data": {"title": "T"}})
    assert change.chat == {"title": "T"}


def test_error_follow_ups_cancel_and_chat_fields() -> None:
    m = reduce(
        {"type": "chat:message:error", "data": {"error": {"content": "bad"}}},
        {"type": "chat:message:follow_ups", "data": {"follow_ups": ["q1", "q2"]}},
        {"type": "chat:tasks:cancel", "data": {}},
    )
    assert m["error"] == {"content": "bad"} and m["followUps"] == ["q1", "q2"] and m["done"] is True
    assert apply_event(new_message("m"), {"type": "chat:title", "data": "Hi"}).chat == {"title": "Hi"}
    assert apply_event(new_message("m"), {"type": "chat:tags", "data": ["a"]}).chat == {"tags": ["a"]}


@pytest.mark.parametrize(
    "event",
    [
        {"type": "chat:active", "data": {"active": True}},
        {"type": "notification", "data": {"type": "info", "content": "x"}},
        {"type": "something:else", "data": {"content": "x"}},
        {"type": "message", "data": "not a dict"},
        {"type": "status", "data": None},
        {"type": "embeds", "data": {"embeds": "not a list"}},
        "not an event",
    ],
)
def test_other_and_malformed_events_change_nothing(event: Any) -> None:
    m = new_message("m")
    before = dict(m)
    change = apply_event(m, event)
    assert not change
    assert m == before


def test_chat_state_rebuilds_messages_and_title() -> None:
    chat = ChatState("c")
    chat.apply({"chat_id": "c", "message_id": "a", "data": {"type": "message", "data": {"content": "x"}}})
    chat.apply({"chat_id": "c", "message_id": "b", "data": {"type": "message", "data": {"content": "y"}}})
    chat.apply({"chat_id": "c", "message_id": "a", "data": {"type": "chat:title", "data": "T"}})
    assert chat.messages["a"]["content"] == "x" and chat.messages["b"]["content"] == "y" and chat.title == "T"


def test_unpersisted_prefixes() -> None:
    assert is_persisted_chat("abc")
    for chat_id in ("local:1", "temporary:2", "channel:3", "", None):
        assert not is_persisted_chat(chat_id)
