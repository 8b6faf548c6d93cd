"""Socket.IO v5 packet codec: `<type>[<attachments>-][<namespace>,][<ack id>][<JSON payload>]`, strictly checked."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from chatwire.engine.state import ProtocolError

CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR, BINARY_EVENT, BINARY_ACK = range(7)
TYPE_NAMES = ("CONNECT", "DISCONNECT", "EVENT", "ACK", "CONNECT_ERROR", "BINARY_EVENT", "BINARY_ACK")
_DIGITS = frozenset("0123456789")
_MAX_ID_DIGITS = 15  # ack ids and attachment counts are small integers; longer digit runs are garbage


@dataclass(slots=True)
class Packet:
    """One decoded Socket.IO packet; binary packets hold their attachments once they have all arrived."""

    type: int
    nsp: str = "/"
    data: Any = None
    id: int | None = None
    attachments: int = 0
    buffers: list[bytes] = field(default_factory=list)


def _digits(text: str, start: int) -> int:
    end = start
    n = len(text)
    while end < n and text[end] in _DIGITS:
        end += 1
    if end - start > _MAX_ID_DIGITS:
        raise ProtocolError("number too long in socket.io packet")
    return end


def decode(text: str) -> Packet:
    """Parse one text packet from a client; anything the protocol does not allow raises ProtocolError."""
    if not text or text[0] not in "0123456":
        raise ProtocolError(f"unknown socket.io packet type in {text[:10]!r}")
    kind = ord(text[0]) - 48
    packet = Packet(kind)
    i = 1
    n = len(text)
    if kind in (BINARY_EVENT, BINARY_ACK):
        end = _digits(text, i)
        if end == i or end >= n or text[end] != "-":
            raise ProtocolError("binary socket.io packet without an attachment count")
        packet.attachments = int(text[i:end])
        i = end + 1
    if i < n and text[i] == "/":
        comma = text.find(",", i)
        if comma < 0:
            packet.nsp, i = text[i:], n
        else:
            packet.nsp, i = text[i:comma], comma + 1
    end = _digits(text, i)
    if end > i:
        packet.id = int(text[i:end])
        i = end
    if i < n:
        try:
            packet.data = json.loads(text[i:])
        except (ValueError, RecursionError) as exc:  # nested deeper than the decoder goes: refused as well
            raise ProtocolError("socket.io packet payload is not JSON") from exc
    _validate(packet)
    return packet


def _validate(packet: Packet) -> None:
    kind, data = packet.type, packet.data
    if kind == CONNECT:
        ok = (data is None or isinstance(data, dict)) and packet.id is None
    elif kind == DISCONNECT:
        ok = data is None and packet.id is None
    elif kind in (EVENT, BINARY_EVENT):
        ok = isinstance(data, list) and len(data) > 0 and isinstance(data[0], str)
    elif kind in (ACK, BINARY_ACK):
        ok = isinstance(data, list) and packet.id is not None
    else:  # CONNECT_ERROR only ever travels server -> client
        ok = False
    if not ok:
        raise ProtocolError(f"invalid {TYPE_NAMES[kind]} packet")


def reconstruct(packet: Packet) -> Any:
    """Put the packet's binary attachments back where its placeholders are."""
    buffers = packet.buffers

    def walk(obj: Any) -> Any:
        if isinstance(obj, list):
            return [walk(x) for x in obj]
        if isinstance(obj, dict):
            if obj.get("_placeholder") is True:
                num = obj.get("num")
                if type(num) is not int or not 0 <= num < len(buffers):
                    raise ProtocolError("binary placeholder points at no attachment")
                return buffers[num]
            return {k: walk(v) for k, v in obj.items()}
        return obj

    return walk(packet.data)


def encode(kind: int, nsp: str, data: Any = None, ack_id: int | None = None) -> list[str | bytes]:
    """Encode a packet for sending: the text packet first, then any binary attachments (one JSON pass)."""
    buffers: list[bytes] = []

    def placeholder(obj: Any) -> Any:
        if isinstance(obj, (bytes, bytearray, memoryview)):
            buffers.append(bytes(obj))
            return {"_placeholder": True, "num": len(buffers) - 1}
        raise TypeError(f"{type(obj).__name__} is not JSON serializable")

    body = (
        ""
        if data is None
        else json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=placeholder)
    )
    if buffers:
        kind = BINARY_EVENT if kind == EVENT else BINARY_ACK if kind == ACK else kind
    parts = [str(kind)]
    if buffers:
        parts.append(f"{len(buffers)}-")
    if nsp != "/":
        parts.append(nsp + ",")
    if ack_id is not None:
        parts.append(str(ack_id))
    parts.append(body)
    return ["".join(parts), *buffers]
