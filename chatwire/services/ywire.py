"""Small readers and writers of the Yjs wire formats the server must look into: lib0 variable-length
integers, state vectors, and awareness updates (both y-protocols' binary form and the JSON form that
Open WebUI's editor sends), so that the server can clear the cursor of a session that is gone."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal


class WireError(ValueError):
    """The bytes are not in the expected Yjs encoding."""


def write_var_uint(value: int, out: bytearray) -> None:
    """Append `value` as a lib0 unsigned varint (7 bits a byte, low bits first)."""
    if value < 0:
        raise WireError("negative varint")
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)


def read_var_uint(data: bytes, pos: int) -> tuple[int, int]:
    """Read a lib0 unsigned varint at `pos`; returns (value, next position)."""
    value = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise WireError("varint runs past the end")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise WireError("varint too long")


def read_var_string(data: bytes, pos: int) -> tuple[str, int]:
    length, pos = read_var_uint(data, pos)
    end = pos + length
    if end > len(data):
        raise WireError("string runs past the end")
    try:
        return data[pos:end].decode("utf-8"), end
    except UnicodeDecodeError as exc:
        raise WireError("string is not UTF-8") from exc


def write_var_string(text: str, out: bytearray) -> None:
    raw = text.encode("utf-8")
    write_var_uint(len(raw), out)
    out.extend(raw)


def decode_state_vector(data: bytes) -> dict[int, int]:
    """A Yjs state vector (`{client: clock}`), as pycrdt's `get_state` returns it."""
    count, pos = read_var_uint(data, 0)
    result: dict[int, int] = {}
    for _ in range(count):
        client, pos = read_var_uint(data, pos)
        clock, pos = read_var_uint(data, pos)
        result[client] = clock
    return result


@dataclass(frozen=True)
class AwarenessEntry:
    """One client's entry in an awareness update."""

    client_id: int
    clock: int
    removed: bool


@dataclass(frozen=True)
class AwarenessUpdate:
    """A parsed awareness update and the format it came in."""

    format: Literal["binary", "json"]
    entries: list[AwarenessEntry]


def parse_awareness(update: bytes) -> AwarenessUpdate | None:
    """Parse an awareness update in either known form; None when it is neither (it is still relayed).

    - json: UTF-8 JSON object `{"<clientID>": state}` (Open WebUI's editor);
    - binary: y-protocols `varuint n, n x (varuint client, varuint clock, varstring JSON state)`.
    """
    stripped = update.lstrip()
    if stripped[:1] == b"{":
        try:
            obj = json.loads(update.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            obj = None
        if isinstance(obj, dict):
            entries = []
            for key, state in obj.items():
                if not key.isdigit():
                    return None
                entries.append(AwarenessEntry(int(key), 0, state is None))
            return AwarenessUpdate("json", entries)
    try:
        count, pos = read_var_uint(update, 0)
        if count > len(update):
            return None
        entries = []
        for _ in range(count):
            client, pos = read_var_uint(update, pos)
            clock, pos = read_var_uint(update, pos)
            state, pos = read_var_string(update, pos)
            entries.append(AwarenessEntry(client, clock, state == "null"))
        if pos != len(update):
            return None
        return AwarenessUpdate("binary", entries)
    except WireError:
        return None


def awareness_removal(format: Literal["binary", "json"], clients: dict[int, int]) -> bytes:
    """An awareness update that clears the given clients (`{client_id: last clock}`).

    binary: each client with its next clock and a null state, as y-protocols' removeAwarenessStates encodes it.
    json: each client with an empty state: Open WebUI's editor keeps the entry but draws no cursor for it (a
    null state would make its cursor plugin fail).
    """
    if format == "json":
        return json.dumps({str(client): {} for client in clients}, separators=(",", ":")).encode()
    out = bytearray()
    write_var_uint(len(clients), out)
    for client, clock in clients.items():
        write_var_uint(client, out)
        write_var_uint(clock + 1, out)
        write_var_string("null", out)
    return bytes(out)
