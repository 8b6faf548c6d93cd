"""The fast send path's pure parts: websocket framing, packet encoding, and the slow-reader backlog."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.frames import Frame, Opcode

from chatwire.transport.fastpath import Batcher, Sink, delta_of, encode_event, text_frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_text_frame_matches_the_websocket_reference_serializer(size: int) -> None:
    payload = b"x" * size
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False)


def test_encode_event_is_a_socketio_event_packet() -> None:
    raw = encode_event("events", [{"a": 1, "é": "ü"}, "7-12"])
    assert raw[:2] == b"42"
    assert json.loads(raw[2:]) == ["events", {"a": 1, "é": "ü"}, "7-12"]
    assert encode_event("x", [], "/admin").startswith(b"42/admin,")


class FakeTransport:
    """A transport whose write buffer the test controls, recording what is written."""

    def __init__(self) -> None:
        self.buffered = 0
        self.written: list[bytes] = []
        self.closing = False

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing


class FakeProto:
    def __init__(self) -> None:
        self.transport = FakeTransport()
        self.disconnected = False
        self.close_sent = False


def delta_event(content: str, message_id: str = "m1", offset: str | None = None) -> list[Any]:
    args: list[Any] = [
        {
            "chat_id": "c1",
            "message_id": message_id,
            "data": {"type": "chat:message:delta", "data": {"content": content}},
        }
    ]
    if offset is not None:
        args.append(offset)
    return args


def frames_to_events(blob: bytes) -> list[list[Any]]:
    """Split concatenated unmasked frames back into Socket.IO event arrays."""
    out = []
    i = 0
    while i < len(blob):
        n = blob[i + 1] & 0x7F
        i += 2
        if n == 126:
            n = int.from_bytes(blob[i : i + 2], "big")
            i += 2
        elif n == 127:
            n = int.from_bytes(blob[i : i + 8], "big")
            i += 8
        out.append(json.loads(blob[i + 2 : i + n]))
        i += n
    return out


def write(sink: Sink, args: list[Any]) -> None:
    sink.write(text_frame(encode_event("events", args)), "events", args)


async def test_writes_go_straight_out_while_the_socket_drains() -> None:
    proto = FakeProto()
    sink = Sink(proto, (1000, 10, 10_000), lambda s: None)
    write(sink, delta_event("a"))
    write(sink, delta_event("b"))
    assert [e[1]["data"]["data"]["content"] for e in frames_to_events(b"".join(proto.transport.written))] == [
        "a",
        "b",
    ]


async def test_backlog_merges_consecutive_deltas_and_keeps_order() -> None:
    proto = FakeProto()
    sink = Sink(proto, (1000, 100, 100_000), lambda s: None)
    proto.transport.buffered = 5000  # the reader stopped reading
    write(sink, delta_event("He", offset="e-1"))
    write(sink, delta_event("llo", offset="e-2"))
    write(sink, [{"chat_id": "c1", "message_id": "m1", "data": {"type": "status", "data": {"done": True}}}])
    write(sink, delta_event(" world", offset="e-4"))
    write(sink, delta_event("!", message_id="m2", offset="e-5"))
    assert proto.transport.written == []
    proto.transport.buffered = 0
    await asyncio.sleep(0.05)
    events = frames_to_events(b"".join(proto.transport.written))
    assert [(e[1]["message_id"], e[1]["data"]["type"], e[1]["data"].get("data")) for e in events] == [
        ("m1", "chat:message:delta", {"content": "Hello"}),
        ("m1", "status", {"done": True}),
        ("m1", "chat:message:delta", {"content": " world"}),
        ("m2", "chat:message:delta", {"content": "!"}),
    ]
    assert events[0][2] == "e-2"  # a merged delta carries the newest offset


async def test_overflow_drops_the_backlog_and_tells_the_session_to_reload() -> None:
    proto = FakeProto()
    overflows: list[Sink] = []

    def on_overflow(s: Sink) -> None:
        overflows.append(s)
        s.backlog.append((text_frame(encode_event("events", [{"data": {"type": "chat:reload"}}])), None))

    sink = Sink(proto, (1000, 3, 100_000), on_overflow)
    proto.transport.buffered = 5000
    for i in range(5):
        write(sink, [{"chat_id": "c", "message_id": "m", "data": {"type": "status", "data": {"i": i}}}])
    assert overflows and len(sink.backlog) <= 3
    proto.transport.buffered = 0
    await asyncio.sleep(0.05)
    events = frames_to_events(b"".join(proto.transport.written))
    assert any(e[1]["data"]["type"] == "chat:reload" for e in events)


def test_only_pure_content_deltas_coalesce() -> None:
    assert delta_of("events", delta_event("x"), "/") is not None
    assert delta_of("events:channel", delta_event("x"), "/") is None
    extra = delta_event("x")
    extra[0]["data"]["data"]["done"] = True
    assert delta_of("events", extra, "/") is None


async def test_a_closed_socket_is_reported_so_the_caller_can_fall_back() -> None:
    proto = FakeProto()
    proto.close_sent = True
    sink = Sink(proto, (1000, 10, 10_000), lambda s: None)
    assert sink.write(b"frame") is False


async def test_batched_frames_leave_in_order_with_one_write_per_socket() -> None:
    batcher = Batcher()
    protos = [FakeProto(), FakeProto()]
    sinks = [Sink(p, (1000, 10, 10_000), lambda s: None, batcher) for p in protos]
    for i in range(3):
        for sink in sinks:
            write(sink, delta_event(str(i)))
    assert all(p.transport.written == [] for p in protos)  # gathered, not yet written
    await asyncio.sleep(0.01)
    for proto in protos:
        assert len(proto.transport.written) == 1
        events = frames_to_events(proto.transport.written[0])
        assert [e[1]["data"]["data"]["content"] for e in events] == ["0", "1", "2"]


async def test_a_flush_writes_what_was_gathered_before_anything_that_follows() -> None:
    batcher = Batcher(max_hold=10.0)
    proto = FakeProto()
    sink = Sink(proto, (1000, 10, 10_000), lambda s: None, batcher)
    write(sink, delta_event("a"))
    sink.flush()  # e.g. before a binary packet on the stock path, or before the websocket closes
    proto.transport.write(b"after")
    await asyncio.sleep(0.01)
    assert proto.transport.written[1] == b"after"
    assert frames_to_events(proto.transport.written[0])[0][1]["data"]["data"]["content"] == "a"


async def test_a_lone_frame_is_not_held_for_the_whole_window() -> None:
    batcher = Batcher(max_hold=10.0)
    proto = FakeProto()
    sink = Sink(proto, (1000, 10, 10_000), lambda s: None, batcher)
    write(sink, delta_event("a"))
    await asyncio.sleep(0)
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(proto.transport.written) == 1  # left after a few empty loop turns, not after max_hold
