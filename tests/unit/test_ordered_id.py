"""User ids sort by creation time (UUIDv7), so sign-ups within one second keep their order."""

from __future__ import annotations

import time
import uuid

from chatwire.util import new_ordered_id


def test_ids_are_version_7_uuids_in_the_usual_string_form() -> None:
    value = new_ordered_id()
    parsed = uuid.UUID(value)
    assert str(parsed) == value and parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert abs((parsed.int >> 80) - time.time_ns() // 1_000_000) < 5_000  # its clock is the wall clock, in ms


def test_ids_made_a_millisecond_apart_sort_in_that_order_and_never_repeat() -> None:
    made = []
    for _ in range(20):
        made.append(new_ordered_id())
        time.sleep(0.0015)
    assert made == sorted(made)
    assert len({new_ordered_id() for _ in range(10_000)}) == 10_000
