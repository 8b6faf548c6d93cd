"""chatwire's reader of incoming WebSocket frames (chatwire/engine/wsframes.py) on its own, RFC 6455 section 5.

Client frames are built by websockets' own serializer (`Frame.serialize(mask=True)`, a real client's masking and
length encodings) where it can build them, and by hand where a frame must break the protocol.
"""

from __future__ import annotations

import os
import random
from typing import Any

import pytest
from websockets.frames import Close, Frame, Opcode

from chatwire.engine.wsframes import (
    FrameError,
    FrameReader,
    close_frame,
    parse_close,
    pong_frame,
    unmask,
)


class Sink:
    """Records what the reader hands out, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_text(self, text: str) -> None:
        self.events.append(("text", text))

    def on_binary(self, data: bytes) -> None:
        self.events.append(("binary", data))

    def on_ping(self, payload: bytes) -> None:
        self.events.append(("ping", payload))

    def on_pong(self, payload: bytes) -> None:
        self.events.append(("pong", payload))

    def on_close(self, code: int, reason: str, payload: bytes) -> None:
        self.events.append(("close", code, reason, payload))


def client(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    """A masked client frame, as websockets' client serializes it."""
    return Frame(opcode, data, fin=fin).serialize(mask=True)


def raw(first: int, payload: bytes, *, masked: bool = True, length: int | None = None) -> bytes:
    """A hand-built client frame: header byte, 7/16/64-bit length (as needed, or `length` forced), mask, payload."""
    n = len(payload) if length is None else length
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = bytes((first, mask_bit | n))
    elif n < 65536:
        head = bytes((first, mask_bit | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, mask_bit | 127)) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read(
    data: bytes, max_size: int | None = 1 << 20, chunks: list[int] | None = None
) -> list[tuple[Any, ...]]:
    """Feed `data` to a new reader (whole, or in chunks of the given sizes) and return the sink's events."""
    reader, sink = FrameReader(max_size), Sink()
    if chunks is None:
        reader.feed(data, sink)
    else:
        pos = 0
        for size in chunks:
            reader.feed(data[pos : pos + size], sink)
            pos += size
        reader.feed(data[pos:], sink)
    return sink.events


def error(data: bytes, max_size: int | None = 1 << 20) -> tuple[int, list[tuple[Any, ...]]]:
    """The close code of the FrameError `data` raises, and what was handed out before it."""
    reader, sink = FrameReader(max_size), Sink()
    with pytest.raises(FrameError) as caught:
        reader.feed(data, sink)
    return caught.value.code, sink.events


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70_000])
def test_every_length_encoding_of_text_and_binary(length: int) -> None:
    """7-bit lengths up to 125, 16-bit from 126 to 65535, 64-bit above, and the edges of each."""
    text = ("é" * (length // 2) + "x" * (length % 2)) if length else ""
    data = bytes(i % 251 for i in range(length))
    stream = client(Opcode.TEXT, text.encode()) + client(Opcode.BINARY, data)
    assert read(stream) == [("text", text), ("binary", data)]


def test_unmask_is_a_xor_with_the_repeated_key() -> None:
    mask = b"\x01\x80\xff\x37"
    for n in (0, 1, 3, 4, 5, 1000):
        data = os.urandom(n)
        assert unmask(data, mask) == bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        assert unmask(unmask(data, mask), mask) == data


def test_fragmented_messages_are_handed_out_whole_with_control_frames_in_between() -> None:
    stream = (
        client(Opcode.TEXT, b"hel", fin=False)
        + client(Opcode.PING, b"p1")
        + client(Opcode.CONT, b"lo w\xc3", fin=False)  # a character split across fragments is fine
        + client(Opcode.PONG, b"")
        + client(Opcode.CONT, b"\xb6rld", fin=True)
        + client(Opcode.BINARY, b"\x00", fin=False)
        + client(Opcode.CONT, b"", fin=False)
        + client(Opcode.CONT, b"\x01\x02", fin=True)
        + client(Opcode.TEXT, b"after")
    )
    assert read(stream) == [
        ("ping", b"p1"),
        ("pong", b""),
        ("text", "hello wörld"),
        ("binary", b"\x00\x01\x02"),
        ("text", "after"),
    ]


def stream_of_everything() -> bytes:
    return b"".join(
        [
            client(Opcode.TEXT, b"3"),
            client(Opcode.BINARY, os.urandom(300)),
            client(Opcode.TEXT, "ü".encode() * 40_000, fin=False),
            client(Opcode.PING, b"ping"),
            client(Opcode.CONT, b"x" * 70_000, fin=True),
            client(Opcode.TEXT, b"42"),
            client(Opcode.CLOSE, Close(1001, "going").serialize()),
            client(Opcode.TEXT, b"ignored: after the close"),
        ]
    )


def test_frames_split_at_every_byte_parse_as_when_whole() -> None:
    stream = stream_of_everything()
    whole = read(stream)
    assert whole[-1] == ("close", 1001, "going", Close(1001, "going").serialize())
    assert len(whole) == 6
    assert read(stream, chunks=[1] * len(stream)) == whole


def test_frames_split_at_random_chunk_boundaries_parse_as_when_whole() -> None:
    stream = stream_of_everything()
    whole = read(stream)
    rng = random.Random(6455)
    for _ in range(50):
        chunks = [rng.choice((1, 2, 3, 7, 100, 4096, 65536)) for _ in range(200)]
        assert read(stream, chunks=chunks) == whole


def test_a_large_frame_in_many_chunks_is_joined_once_it_is_complete() -> None:
    data = os.urandom(200_000)
    stream = client(Opcode.BINARY, data)
    reader, sink = FrameReader(1 << 20), Sink()
    for pos in range(0, len(stream) - 1, 1000):
        reader.feed(stream[pos : min(pos + 1000, len(stream) - 1)], sink)
    assert sink.events == [] and reader.pending_size == len(stream) - 1
    reader.feed(stream[-1:], sink)
    assert sink.events == [("binary", data)] and reader.pending == []


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes_are_a_protocol_error(opcode: int) -> None:
    assert error(raw(0x80 | opcode, b"x")) == (1002, [])


def test_an_unmasked_client_frame_is_a_protocol_error() -> None:
    assert error(raw(0x81, b"3", masked=False)) == (1002, [])


@pytest.mark.parametrize("bit", [0x40, 0x20, 0x10])
def test_reserved_bits_are_a_protocol_error_without_extensions(bit: int) -> None:
    assert error(raw(0x81 | bit, b"3")) == (1002, [])


def test_control_frames_must_be_whole_and_short() -> None:
    assert error(raw(0x09, b"p"))[0] == 1002  # a ping without FIN
    assert error(raw(0x89, b"p" * 126))[0] == 1002
    assert read(raw(0x89, b"p" * 125)) == [("ping", b"p" * 125)]


def test_continuations_must_follow_a_started_message_and_nothing_else_may_interrupt_it() -> None:
    assert error(client(Opcode.CONT, b"x"))[0] == 1002
    assert error(client(Opcode.TEXT, b"a", fin=False) + client(Opcode.TEXT, b"b"))[0] == 1002
    assert error(client(Opcode.BINARY, b"a", fin=False) + client(Opcode.BINARY, b"b"))[0] == 1002


def test_the_top_bit_of_a_64_bit_length_must_be_0() -> None:
    frame = bytes((0x82, 0xFF)) + (1 << 63).to_bytes(8, "big") + b"mask"
    assert error(frame, max_size=None)[0] == 1002


def test_a_message_over_max_size_is_1009_from_its_header_before_the_payload_arrives() -> None:
    assert read(client(Opcode.TEXT, b"x" * 1000), max_size=1000) == [("text", "x" * 1000)]
    header = client(Opcode.BINARY, b"x" * 1001)[:8]  # 2 bytes, a 16-bit length, the mask: no payload yet
    assert error(header, max_size=1000) == (1009, [])
    fragmented = client(Opcode.TEXT, b"x" * 600, fin=False) + client(Opcode.CONT, b"x" * 401, fin=True)[:8]
    assert error(fragmented, max_size=1000) == (1009, [])
    huge = bytes((0x82, 0xFF)) + (1 << 40).to_bytes(8, "big")
    assert error(huge, max_size=1 << 20) == (1009, [])


def test_invalid_utf8_in_a_text_message_is_1007() -> None:
    assert error(client(Opcode.TEXT, b"\xff\xfe")) == (1007, [])
    assert error(client(Opcode.TEXT, b"ok\xc3", fin=False) + client(Opcode.CONT, b"(", fin=True))[0] == 1007
    assert error(client(Opcode.TEXT, "\ud800".encode("utf-8", "surrogatepass")))[0] == 1007
    assert read(client(Opcode.BINARY, b"\xff")) == [("binary", b"\xff")]  # binary is not text


def test_close_frames() -> None:
    assert parse_close(b"") == (1005, "")
    assert parse_close(Close(1000, "bye").serialize()) == (1000, "bye")
    assert parse_close(Close(4999, "é").serialize()) == (4999, "é")
    for code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4000):
        assert parse_close(code.to_bytes(2, "big"))[0] == code
    for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535):
        with pytest.raises(FrameError) as caught:
            parse_close(code.to_bytes(2, "big"))
        assert caught.value.code == 1002
    with pytest.raises(FrameError) as caught:
        parse_close(b"\x03")
    assert caught.value.code == 1002
    with pytest.raises(FrameError) as caught:
        parse_close(b"\x03\xe8\xff")
    assert caught.value.code == 1007
    # through the reader: an empty close reports 1005; a close inside a fragmented message is an error
    assert read(client(Opcode.CLOSE, b"")) == [("close", 1005, "", b"")]
    assert error(client(Opcode.TEXT, b"a", fin=False) + client(Opcode.CLOSE, b""))[0] == 1002


def test_nothing_is_read_after_a_close_frame_or_an_error() -> None:
    reader, sink = FrameReader(), Sink()
    reader.feed(client(Opcode.CLOSE, Close(1000, "").serialize()) + client(Opcode.TEXT, b"a"), sink)
    reader.feed(client(Opcode.TEXT, b"b"), sink)
    assert sink.events == [("close", 1000, "", b"\x03\xe8")] and reader.closed
    reader, sink = FrameReader(), Sink()
    with pytest.raises(FrameError):
        reader.feed(client(Opcode.TEXT, b"a") + raw(0x83, b"") + client(Opcode.TEXT, b"b"), sink)
    reader.feed(client(Opcode.TEXT, b"c"), sink)
    assert sink.events == [("text", "a")] and reader.closed


def test_server_control_frames_are_what_websockets_serializes() -> None:
    for code, reason in ((1000, ""), (4001, "bye")):
        expected = Frame(Opcode.CLOSE, Close(code, reason).serialize()).serialize(mask=False)
        assert close_frame(code, reason) == expected
    assert pong_frame(b"hi") == Frame(Opcode.PONG, b"hi").serialize(mask=False)
    long = close_frame(1011, "é" * 100)  # 200 bytes of reason: cut to 123 at a character boundary
    assert len(long) == 2 + 2 + 122 and long[4:].decode() == "é" * 61
    for code in (1005, 1006, 1015, 999, 5000):
        with pytest.raises(ValueError):
            close_frame(code)
