"""Incoming WebSocket frames of a server connection after its handshake, RFC 6455 section 5, parsed by chatwire.

Each Engine.IO pong is one tiny masked text frame; parsing it with websockets' general reader (a generator per
stream, a `Frame` dataclass and an `Opcode` enum per frame) was a fifth of an idle server's CPU. This reader is a
plain object fed whatever TCP chunks arrive: it unmasks, reassembles fragmented messages, answers nothing itself
and hands whole messages and control frames to a `FrameSink`. A peer that breaks the protocol gets a `FrameError`
carrying the close code to fail the connection with: 1002 (protocol error), 1007 (invalid UTF-8) or 1009 (message
too big). No extension is negotiated (chatwire's server offers none), so the reserved bits must be 0.
"""

from __future__ import annotations

from typing import Protocol

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA_OPCODES = frozenset((CONT, TEXT, BINARY))
_CONTROL_OPCODES = frozenset((CLOSE, PING, PONG))

PROTOCOL_ERROR = 1002
INVALID_DATA = 1007
MESSAGE_TOO_BIG = 1009
NO_STATUS = 1005  # a close frame without a payload reports this code (never sent on the wire)
# Close codes a peer may send (RFC 6455 7.4.1 and the IANA registry); 3000-4999 are for libraries and apps.
_WIRE_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))


class FrameError(Exception):
    """The peer broke RFC 6455: fail the connection with close `code` (1002, 1007 or 1009) and `reason`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class FrameSink(Protocol):
    """Receives what a `FrameReader` parsed, in order."""

    def on_text(self, text: str) -> None: ...

    def on_binary(self, data: bytes) -> None: ...

    def on_ping(self, payload: bytes) -> None: ...

    def on_pong(self, payload: bytes) -> None: ...

    def on_close(self, code: int, reason: str, payload: bytes) -> None:
        """A close frame: its code (1005 when it had none), its reason, and its raw payload (to echo it)."""


def unmask(data: bytes, mask: bytes) -> bytes:
    """XOR `data` with the 4-byte `mask` repeated (RFC 6455 5.3), as one big-integer XOR: linear and in C."""
    n = len(data)
    if not n:
        return b""
    key = (mask * ((n >> 2) + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def parse_close(payload: bytes) -> tuple[int, str]:
    """A close frame's code and reason (RFC 6455 5.5.1); 1005 for an empty payload. FrameError when invalid."""
    if not payload:
        return NO_STATUS, ""
    if len(payload) == 1:
        raise FrameError(PROTOCOL_ERROR, "close frame too short")
    code = int.from_bytes(payload[:2], "big")
    if code not in _WIRE_CLOSE_CODES and not 3000 <= code < 5000:
        raise FrameError(PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError as exc:
        raise FrameError(INVALID_DATA, "invalid UTF-8 in the close reason") from exc
    return code, reason


def close_frame(code: int, reason: str = "") -> bytes:
    """An unmasked server close frame with `code` and `reason`, cut to fit a control frame at a character boundary.
    ValueError for a code that may not be sent (1005, 1006, 1015, out of range)."""
    if code not in _WIRE_CLOSE_CODES and not 3000 <= code < 5000:
        raise ValueError(f"close code {code} cannot be sent")
    text = reason.encode()
    if len(text) > 123:
        text = text[:123].decode(errors="ignore").encode()
    payload = code.to_bytes(2, "big") + text
    return bytes((0x80 | CLOSE, len(payload))) + payload


def pong_frame(payload: bytes) -> bytes:
    """An unmasked server pong carrying a ping's payload (at most 125 bytes, as the ping's)."""
    return bytes((0x80 | PONG, len(payload))) + payload


class FrameReader:
    """Parses masked client frames from TCP chunks of any size and hands them to a sink; stops after a close frame.

    The sink comes with each `feed` rather than being kept: the connection that owns the reader is its sink, and
    a reference back would make the two a cycle that only the (rarely run) cyclic collector frees.

    Bytes of an incomplete frame wait in a list until the frame's length is there, so a large frame that arrives
    in many chunks is joined once, not once per chunk. `max_size` bounds a message (all its fragments), and is
    checked from the frame header, before its payload is buffered."""

    __slots__ = (
        "closed",
        "fragment_opcode",
        "fragment_size",
        "fragments",
        "max_size",
        "needed",
        "pending",
        "pending_size",
    )

    def __init__(self, max_size: int | None = None) -> None:
        self.max_size = max_size
        self.pending: list[bytes] = []  # received bytes not parsed yet (an incomplete frame)
        self.pending_size = 0
        self.needed = 0  # how many bytes `pending` must hold before parsing can go on
        self.fragments: list[bytes] = []
        self.fragment_opcode = 0  # TEXT or BINARY while a fragmented message is in progress, else 0
        self.fragment_size = 0
        self.closed = False  # a close frame was read, or a FrameError raised: what follows is ignored

    def feed(self, data: bytes, sink: FrameSink) -> None:
        """Parse what `data` completes; FrameError (after which everything is ignored) when the peer broke RFC 6455."""
        if self.closed:
            return
        pending = self.pending
        if pending:
            pending.append(data)
            self.pending_size += len(data)
            if self.pending_size < self.needed:
                return
            data = b"".join(pending)
            pending.clear()
        try:
            self.parse(data, sink)
        except FrameError:
            self.stop()
            raise

    def stop(self) -> None:
        """Ignore everything from now on (the connection is failing or closed) and drop what is buffered."""
        self.closed = True
        self.pending.clear()
        self.pending_size = 0
        self.fragments = []

    def parse(self, buf: bytes, sink: FrameSink) -> None:
        """Hand every whole frame of `buf` to `sink`; what is left (an incomplete frame) waits in `pending`."""
        size = len(buf)
        pos = 0
        while pos < size:
            if size - pos < 2:
                break
            first = buf[pos]
            second = buf[pos + 1]
            length = second & 0x7F
            if length < 126:
                head = 6
            elif length == 126:
                head = 8
                if size - pos < 4:  # the length is enough to judge the frame; the mask comes with the payload
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            else:
                head = 14
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                if length >> 63:
                    raise FrameError(PROTOCOL_ERROR, "the most significant bit of a 64-bit length must be 0")
            opcode = self.check(first, second, length)
            end = pos + head + length
            if end > size:
                break
            payload = unmask(buf[pos + head : end], buf[pos + head - 4 : pos + head])
            pos = end
            if opcode == TEXT and first & 0x80:
                sink.on_text(_text(payload))
            elif opcode == BINARY and first & 0x80:
                sink.on_binary(payload)
            elif opcode < CLOSE:
                self.fragment(opcode, payload, bool(first & 0x80), sink)
            elif opcode == PING:
                sink.on_ping(payload)
            elif opcode == PONG:
                sink.on_pong(payload)
            else:
                code, reason = parse_close(payload)
                if self.fragment_opcode:
                    raise FrameError(PROTOCOL_ERROR, "close frame inside a fragmented message")
                self.closed = True
                sink.on_close(code, reason, payload)
                return
            if self.closed:  # the sink ended the connection while handling this frame
                return
        if pos < size:
            rest = buf[pos:] if pos else buf
            self.pending.append(rest)
            self.pending_size = len(rest)
            self.needed = self.wanted(rest)

    def check(self, first: int, second: int, length: int) -> int:
        """The frame's opcode, once its header is known valid for a client frame in this state (else FrameError)."""
        opcode = first & 0x0F
        if first & 0x70:
            raise FrameError(PROTOCOL_ERROR, "reserved bits must be 0")
        if not second & 0x80:
            raise FrameError(PROTOCOL_ERROR, "client frames must be masked")
        if opcode in _CONTROL_OPCODES:
            if not first & 0x80:
                raise FrameError(PROTOCOL_ERROR, "fragmented control frame")
            if length > 125:
                raise FrameError(PROTOCOL_ERROR, "control frame too long")
            return opcode
        if opcode not in _DATA_OPCODES:
            raise FrameError(PROTOCOL_ERROR, f"invalid opcode {opcode:#x}")
        if opcode == CONT:
            if not self.fragment_opcode:
                raise FrameError(PROTOCOL_ERROR, "unexpected continuation frame")
            total = self.fragment_size + length
        elif self.fragment_opcode:
            raise FrameError(PROTOCOL_ERROR, "expected a continuation frame")
        else:
            total = length
        if self.max_size is not None and total > self.max_size:
            raise FrameError(MESSAGE_TOO_BIG, f"message of {total} bytes or more exceeds {self.max_size}")
        return opcode

    def fragment(self, opcode: int, payload: bytes, fin: bool, sink: FrameSink) -> None:
        """A frame of a fragmented message (the first, or a continuation): the whole message goes out with the last."""
        if opcode != CONT:
            self.fragment_opcode = opcode
            self.fragments = [payload]
            self.fragment_size = len(payload)
            return
        self.fragments.append(payload)
        self.fragment_size += len(payload)
        if not fin:
            return
        data = b"".join(self.fragments)
        kind = self.fragment_opcode
        self.fragments = []
        self.fragment_opcode = 0
        self.fragment_size = 0
        if kind == TEXT:
            sink.on_text(_text(data))
        else:
            sink.on_binary(data)

    @staticmethod
    def wanted(rest: bytes) -> int:
        """How many bytes the frame starting `rest` needs before parsing can go on (its header, then all of it)."""
        if len(rest) < 2:
            return 2
        length = rest[1] & 0x7F
        if length < 126:
            return 6 + length
        head = 8 if length == 126 else 14
        if len(rest) < head - 4:
            return head - 4
        return head + int.from_bytes(rest[2 : head - 4], "big")


def _text(payload: bytes) -> str:
    try:
        return payload.decode()
    except UnicodeDecodeError as exc:
        raise FrameError(INVALID_DATA, f"invalid UTF-8 at byte {exc.start}") from exc


__all__ = ["FrameError", "FrameReader", "FrameSink", "close_frame", "parse_close", "pong_frame", "unmask"]
