"""Yjs wire helpers and snapshots: varints, state vectors, awareness parsing and removal, lossless compaction."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pycrdt import Doc, Text, get_state

from chatwire.services.collab import build_snapshot, note_id_of
from chatwire.services.ywire import (
    awareness_removal,
    decode_state_vector,
    parse_awareness,
    read_var_uint,
    write_var_string,
    write_var_uint,
)


@given(st.integers(min_value=0, max_value=2**53))
def test_var_uint_round_trip(value: int) -> None:
    out = bytearray()
    write_var_uint(value, out)
    assert read_var_uint(bytes(out), 0) == (value, len(out))


def test_state_vector_matches_pycrdt() -> None:
    doc: Doc = Doc(client_id=123456789)
    doc.get("t", type=Text).insert(0, "hello")
    assert decode_state_vector(get_state(doc.get_update())) == {123456789: 5}


def binary_awareness(entries: list[tuple[int, int, object]]) -> bytes:
    out = bytearray()
    write_var_uint(len(entries), out)
    for client, clock, state in entries:
        write_var_uint(client, out)
        write_var_uint(clock, out)
        write_var_string(json.dumps(state), out)
    return bytes(out)


def test_parse_binary_awareness_and_its_removal() -> None:
    update = binary_awareness([(3000000000, 4, {"user": {"name": "Ada"}}), (7, 1, None)])
    parsed = parse_awareness(update)
    assert parsed is not None and parsed.format == "binary"
    assert [(e.client_id, e.clock, e.removed) for e in parsed.entries] == [
        (3000000000, 4, False),
        (7, 1, True),
    ]
    removal = parse_awareness(awareness_removal("binary", {3000000000: 4}))
    assert removal is not None
    assert [(e.client_id, e.clock, e.removed) for e in removal.entries] == [(3000000000, 5, True)]


def test_parse_json_awareness_of_open_webui_editor() -> None:
    update = json.dumps({"42": {"user": {"name": "Ada", "color": "#FF6B6B", "id": "sid"}}}).encode()
    parsed = parse_awareness(update)
    assert parsed is not None and parsed.format == "json"
    assert [(e.client_id, e.removed) for e in parsed.entries] == [(42, False)]
    assert json.loads(awareness_removal("json", {42: 0})) == {"42": {}}


@pytest.mark.parametrize("junk", [b"", b"\xff\xff", b"[1,2]", b'{"a": 1}', b"\x01\x02", bytes([1, 2, 3])])
def test_unknown_awareness_bytes_are_not_parsed(junk: bytes) -> None:
    assert parse_awareness(junk) is None


def test_document_ids_other_than_notes_are_refused() -> None:
    assert note_id_of("note:abc") == "abc"
    for bad in ("chat:abc", "note:", "abc", ""):
        with pytest.raises(Exception, match="unknown document id"):
            note_id_of(bad)


def _edits(seed: int, n: int) -> list[bytes]:
    """Updates of two concurrent editors (each sees the other's edits late)."""
    rnd = random.Random(seed)
    docs: list[Doc] = [Doc(), Doc()]
    texts = [d.get("t", type=Text) for d in docs]
    log: list[bytes] = []
    inbox: list[list[bytes]] = [[], []]
    for _ in range(n):
        i = rnd.randrange(2)
        if rnd.random() < 0.3:
            for u in inbox[i]:
                docs[i].apply_update(u)
            inbox[i] = []
        before = docs[i].get_state()
        t = texts[i]
        if len(t) and rnd.random() < 0.4:
            at = rnd.randrange(len(t))
            del t[at : min(len(t), at + rnd.randint(1, 3))]
        else:
            t.insert(rnd.randint(0, len(t)), rnd.choice("abcdef"))
        update = docs[i].get_update(before)
        log.append(update)
        inbox[1 - i].append(update)
    return log


def _text(updates: list[bytes]) -> str:
    doc: Doc = Doc()
    for u in updates:
        doc.apply_update(u)
    return str(doc.get("t", type=Text))


def test_snapshot_plus_tail_equals_the_whole_log() -> None:
    log = _edits(3, 400)
    expected = _text(log)
    for cut in (1, 2, 57, 200, 399):
        snapshot = build_snapshot(log[:cut])
        assert _text([snapshot, *log[cut:]]) == expected
    assert len(build_snapshot(log)) < sum(len(u) for u in log)


def test_snapshot_keeps_updates_whose_dependencies_are_missing() -> None:
    doc: Doc = Doc()
    text = doc.get("t", type=Text)
    log: list[bytes] = []
    for word in ("one ", "two ", "three"):
        before = doc.get_state()
        text += word
        log.append(doc.get_update(before))
    # The second update arrives without the first: a Doc holds it as pending and would not encode it.
    snapshot = build_snapshot([log[1], log[2]])
    assert _text([log[0], snapshot]) == "one two three"
