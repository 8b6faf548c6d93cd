"""The nesting-depth check behind MAX_NESTING: exact at the boundary, safe far beyond Python's recursion limit."""

from __future__ import annotations

from chatwire.util import nested_deeper_than
from tests.fuzz import nested


def test_depth_is_counted_exactly() -> None:
    assert not nested_deeper_than(nested(128), 128) and nested_deeper_than(nested(129), 128)
    assert nested_deeper_than([[[]]], 2) and not nested_deeper_than([[[]]], 3)
    assert not nested_deeper_than({"a": [1, {"b": 2}]}, 3) and nested_deeper_than({"a": [1, {"b": [3]}]}, 3)
    assert not nested_deeper_than("text", 0) and not nested_deeper_than(list(range(10_000)), 1)


def test_towers_deeper_than_the_recursion_limit_are_measured() -> None:
    assert nested_deeper_than(nested(100_000), 128)


def test_a_payload_too_short_to_be_too_deep_is_never_walked() -> None:
    """socket_handler skips the depth walk for payloads of at most _NEVER_TOO_DEEP encoded bytes: the tightest
    tower one level too deep (lists or objects) is already longer than that, binary or not."""
    from chatwire.protocol import MAX_NESTING
    from chatwire.transport.context import _NEVER_TOO_DEEP, measure

    def tower(depth: int, leaf: object, box: str) -> object:
        value: object = leaf
        for _ in range(depth - (1 if isinstance(leaf, list | dict) else 0)):
            value = [value] if box == "list" else {"": value}
        return value

    for leaf in ([], {}, b"", 0):
        for box in ("list", "dict"):
            value = tower(MAX_NESTING + 1, leaf, box)
            assert nested_deeper_than(value, MAX_NESTING)
            assert measure(value)[0] > _NEVER_TOO_DEEP
    assert measure(tower(MAX_NESTING, [], "list"))[0] <= _NEVER_TOO_DEEP


def test_model_edge_rules_refuse_the_same_values_with_and_without_their_shortcuts() -> None:
    """Model's one field validator returns early for values that cannot break the rules (ASCII strings, numbers,
    flat dicts of those, lists of models); whatever it does not wave through gets the full checks."""
    import pytest
    from pydantic import ValidationError

    from chatwire.protocol import MAX_NESTING, PublishBatchForm, PublishForm
    from tests.fuzz import nested as tower

    ok = PublishBatchForm.model_validate(
        {
            "events": [
                {"room": "user:a", "event": "e", "data": {"n": 1, "x": 2.5, "ok": True, "z": None, "s": "t"}}
            ]
        }
    )
    assert ok.events[0].data == {"n": 1, "x": 2.5, "ok": True, "z": None, "s": "t"}
    assert (
        PublishForm.model_validate({"room": "user:é", "event": "e", "data": {"k": "ünïcode"}}).room
        == "user:é"
    )
    for data, message in (
        ({"k": "a\x00b"}, "NUL"),
        ({"a\x00": 1}, "NUL"),
        ({"k": "\ud800"}, "UTF-8"),
        ({"k": [{"deeper": "\x00"}]}, "NUL"),
        ({"k": tower(MAX_NESTING)}, "nested"),
    ):
        with pytest.raises(ValidationError) as info:
            PublishBatchForm.model_validate({"events": [{"room": "user:a", "event": "e", "data": data}]})
        assert message in str(info.value), data
        assert info.value.errors()[0]["loc"] == ("events", 0, "data")
    with pytest.raises(ValidationError) as info:
        PublishForm.model_validate({"room": "user:\x00", "event": "e"})
    assert "NUL" in str(info.value) and info.value.errors()[0]["loc"] == ("room",)
