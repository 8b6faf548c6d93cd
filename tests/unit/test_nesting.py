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
