"""The in-process recovery history's byte bound: many rooms, each under its own count bound, cannot add up to
unbounded memory; what is dropped makes older offsets unrecoverable instead of leaving a silent gap."""

from __future__ import annotations

from chatwire.backends.eventlog_memory import ENTRY_OVERHEAD, MemoryEventLog, approx_size


def payload(i: int) -> dict[str, object]:
    return {
        "chat_id": "c",
        "message_id": "m",
        "data": {"type": "chat:message:delta", "data": {"content": "x" * 500 + str(i)}},
    }


async def test_bytes_held_stay_under_the_bound_across_many_rooms() -> None:
    one = ENTRY_OVERHEAD + approx_size(payload(0))
    log = MemoryEventLog(max_per_room=1000, max_age=600, max_bytes=50 * one)
    start = await log.head()
    entries = [await log.append(f"user:{i % 40}", "events", payload(i)) for i in range(400)]
    assert log.nbytes() <= 50 * one
    assert 45 <= log.size() <= 50
    # the newest entries are the ones kept, whatever their room
    newest = entries[-1]
    got = await log.read(entries[-11].offset, [newest.room])
    assert got is not None and got[-1].seq == newest.seq
    # an offset from before the trimmed entries is refused for a room that lost entries
    assert await log.read(start, ["user:0"]) is None


async def test_size_estimate_grows_with_the_payload() -> None:
    assert approx_size({"content": "x" * 10_000}) > approx_size({"content": "x" * 100}) + 9_000
    deep: object = "leaf"
    for _ in range(200):
        deep = [deep]
    assert approx_size(deep) < 10_000  # deep nesting is cut off, not walked (and cannot recurse forever)


async def test_order_index_stays_bounded_when_rooms_trim_themselves() -> None:
    """A quiet room's old entry must not keep the index of a busy room's trimmed entries growing."""
    log = MemoryEventLog(max_per_room=10, max_age=600)
    await log.append("user:quiet", "events", {"n": 0})
    for i in range(20_000):
        await log.append("user:busy", "events", {"n": i})
    assert log.size() == 11
    assert len(log._order) <= 2 * 11 + 1024 + 1
