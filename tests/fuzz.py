"""Hostile payloads for the fuzz tests: hypothesis strategies, and a reproducible way to draw a fixed number of
examples from them outside a `@given` test (the server under test lives in an asyncio fixture)."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
LEAF = st.one_of(st.none(), st.booleans(), INT64, FLOATS, st.text(max_size=40))
JSON = st.recursive(
    LEAF,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25,
)
NUL_TEXT = st.builds(lambda a, b: f"{a}\x00{b}", st.text(max_size=20), st.text(max_size=20))
# Long enough for every length limit of an id or a name, short enough to stay under the payload limit.
LONG_TEXT = st.integers(min_value=1025, max_value=20_000).map(lambda n: "\u00e9" * n)


def nested(depth: int) -> Any:
    """A list/dict tower `depth` levels deep."""
    value: Any = "bottom"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


# At most 250 levels: the test client encodes with orjson (shared with the server), which stops at 255.
# Deeper towers go over the raw websocket (test_raw_engineio_garbage_leaves_the_server_serving).
DEEP = st.integers(min_value=50, max_value=250).map(nested)
DEEP_LIST = DEEP.map(lambda v: [v])  # never an object, so never a valid model
NOT_DICT = st.one_of(
    INT64, FLOATS, st.booleans(), st.lists(LEAF, max_size=5), NUL_TEXT, st.text(max_size=30), DEEP_LIST
)
# Values that are wrong for a field of each kind, whatever the draw.
WRONG: dict[str, st.SearchStrategy[Any]] = {
    # a string field (id, name, token, content): not a string, or one with NUL, or too long
    "str": st.one_of(
        INT64,
        FLOATS,
        st.booleans(),
        st.lists(LEAF, min_size=1, max_size=5),
        st.dictionaries(st.text(max_size=8), LEAF, min_size=1, max_size=3),
        NUL_TEXT,
        DEEP,
    ),
    "long": LONG_TEXT,
    # a free-form object or a model
    "dict": st.one_of(
        INT64, FLOATS, st.booleans(), st.lists(LEAF, min_size=1, max_size=5), NUL_TEXT, DEEP_LIST
    ),
    # over the nesting limit (REST only: the socket test client cannot encode it; raw frames cover sockets)
    "deep": st.integers(min_value=129, max_value=900).map(lambda n: {"k": nested(n)}),
    # a list of ids
    "ids": st.one_of(
        INT64,
        FLOATS,
        st.dictionaries(st.text(max_size=8), LEAF, min_size=1, max_size=3),
        NUL_TEXT,
        st.lists(st.one_of(INT64, NUL_TEXT, FLOATS), min_size=1, max_size=5),
    ),
    # a list of objects
    "objects": st.one_of(
        INT64, FLOATS, NUL_TEXT, st.lists(st.one_of(INT64, NUL_TEXT), min_size=1, max_size=5)
    ),
    # a strict boolean
    "bool": st.one_of(
        st.text(max_size=10),
        FLOATS,
        st.lists(LEAF, max_size=3),
        DEEP,
        st.integers(min_value=2, max_value=2**40),
    ),
    # bytes relayed without being decoded (awareness): anything but bytes or a list of 0-255
    "bytes": st.one_of(
        NUL_TEXT, FLOATS, INT64, st.lists(st.integers(min_value=256, max_value=10**6), min_size=1, max_size=4)
    ),
    # Yjs bytes: not bytes, or bytes no Yjs decoder accepts
    "yjs": st.one_of(
        NUL_TEXT,
        FLOATS,
        st.lists(st.integers(min_value=256, max_value=10**6), min_size=1, max_size=4),
        st.binary(max_size=30).map(lambda b: b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" + b),
    ),
}


WRONG["dict_or_deep"] = st.one_of(WRONG["dict"], WRONG["deep"])


def with_value(template: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A deep copy of `template` with the item at `path` replaced by `value`."""
    out = copy.deepcopy(template)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


def mutations(template: dict[str, Any], fields: dict[tuple[Any, ...], str]) -> st.SearchStrategy[Any]:
    """`template` (a valid payload) with one of `fields` (path -> kind) replaced by a wrong value of that kind."""
    return st.sampled_from(sorted(fields.items(), key=repr)).flatmap(
        lambda item: WRONG[item[1]].map(lambda v: with_value(template, item[0], v))
    )


def draw(strategy: st.SearchStrategy[Any], n: int) -> list[Any]:
    """`n` examples of `strategy`, the same ones on every run (derandomized, no example database)."""
    out: list[Any] = []

    @settings(
        max_examples=n,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: Any) -> None:
        out.append(value)

    collect()
    return out
