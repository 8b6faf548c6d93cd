"""The message writer against real SQLite and PostgreSQL: order, exactly once, prefix, O(n), retries."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text, update

from chatwire.backends.sessions_memory import MemorySessionStore
from chatwire.db.engine import Database
from chatwire.db.models import ChatMessage
from chatwire.db.repos.chats import ChatRepo, MessagePatch, MessageStore
from chatwire.services.events import ChatEvents
from chatwire.services.persistence import MessageWriter


class RecordingBroker:
    """A hand-written Broker that records what would reach the sessions."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any, str]] = []

    async def emit(self, event: str, data: Any, *, room: str, skip_sid: str | None = None) -> None:
        self.sent.append((event, data, room))

    async def call(self, event: str, data: Any, *, sid: str, timeout: float) -> Any:
        raise TimeoutError


async def make_chat(db: Database, messages: dict[str, Any] | None = None) -> str:
    history = {"messages": messages or {}, "currentId": next(iter(messages)) if messages else None}
    record = await ChatRepo(db).create("u1", {"title": "t", "history": history})
    return record.chat.id


async def stored(db: Database, chat_id: str, message_id: str) -> ChatMessage:
    row = await ChatRepo(db).get_message(chat_id, message_id)
    assert row is not None
    return row


def delta(text: str) -> dict[str, Any]:
    return {"type": "message", "data": {"content": text}}


DONE = {"type": "chat:completion", "data": {"done": True}}


async def test_events_applied_in_order_once_coalesced(db: Database) -> None:
    chat_id = await make_chat(db)
    writer = MessageWriter(MessageStore(db), flush_interval=0.05)
    pieces = [f"{i}," for i in range(2000)]
    for i, piece in enumerate(pieces):
        writer.submit(chat_id, "m", delta(piece))
        if i == 1000:
            writer.submit(chat_id, "m", {"type": "status", "data": {"description": "half"}})
        if i % 200 == 0:
            await asyncio.sleep(0.02)
    writer.submit(chat_id, "m", DONE)
    await writer.flush()
    row = await stored(db, chat_id, "m")
    assert row.content == "".join(pieces)
    assert row.status_history == [{"description": "half"}] and row.done is True
    assert row.role == "assistant"
    assert 1 < writer.stats.writes < 100
    # O(n): every content byte is written once, plus small JSON fields.
    assert writer.stats.bytes_written < len(row.content) + 1000
    await writer.close()


async def test_stored_content_is_always_a_prefix_while_streaming(db: Database) -> None:
    chat_id = await make_chat(db)
    writer = MessageWriter(MessageStore(db), flush_interval=0.005)
    emitted = "".join(f"[{i}]" for i in range(1500))
    snapshots: list[str] = []
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            row = await ChatRepo(db).get_message(chat_id, "m")
            if row is not None:
                snapshots.append(row.content)
            await asyncio.sleep(0.003)

    watcher = asyncio.create_task(watch())
    for i in range(1500):
        writer.submit(chat_id, "m", delta(f"[{i}]"))
        if i % 50 == 0:
            await asyncio.sleep(0.01)
    writer.submit(chat_id, "m", DONE)
    await writer.flush()
    stop.set()
    await watcher
    assert len({s for s in snapshots if s}) > 3, "the stream was not observed mid-way"
    for snapshot in snapshots:
        assert emitted.startswith(snapshot)
    assert (await stored(db, chat_id, "m")).content == emitted
    await writer.close()


async def test_existing_message_continues_and_replace_is_written_in_full(db: Database) -> None:
    chat_id = await make_chat(db, {"m": {"id": "m", "role": "assistant", "content": "Hello", "done": False}})
    writer = MessageWriter(MessageStore(db), flush_interval=0.01)
    writer.submit(chat_id, "m", delta(" world"))
    await writer.flush()
    assert (await stored(db, chat_id, "m")).content == "Hello world"
    writer.submit(chat_id, "m", {"type": "replace", "data": {"content": "Bye"}})
    writer.submit(chat_id, "m", delta("!"))
    writer.submit(chat_id, "m", {"type": "chat:title", "data": "Greeting"})
    writer.submit(chat_id, "m", {"type": "chat:tags", "data": ["x"]})
    writer.submit(chat_id, "m", DONE)
    await writer.flush()
    assert (await stored(db, chat_id, "m")).content == "Bye!"
    chat = await ChatRepo(db).get(chat_id)
    assert chat is not None and chat.title == "Greeting" and (chat.meta or {}).get("tags") == ["x"]
    await writer.close()


async def test_content_changed_behind_the_writer_is_rewritten_not_double_appended(db: Database) -> None:
    chat_id = await make_chat(db)
    writer = MessageWriter(MessageStore(db), flush_interval=0.01)
    writer.submit(chat_id, "m", delta("abc"))
    await writer.flush()
    # Another party appends to the row (as a write whose outcome we never learned would have).
    async with db.session() as s:
        await s.execute(update(ChatMessage).where(ChatMessage.id == "m").values(content="abcabc"))
    writer.submit(chat_id, "m", delta("def"))
    await writer.flush()
    assert (await stored(db, chat_id, "m")).content == "abcdef"
    await writer.close()


async def _inject_write_failure(db: Database, only: str | None = None) -> None:
    """Every UPDATE of a message fails from now on (`only`: of the message with that id)."""
    when = f"WHEN NEW.id = '{only}' " if only else ""
    pg_when = f"WHEN (NEW.id = '{only}') " if only else ""
    async with db.session() as s:
        if db.is_sqlite:
            await s.execute(
                text(
                    f"CREATE TRIGGER cw_fail BEFORE UPDATE ON chat_messages {when}"
                    "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
                )
            )
        else:
            await s.execute(
                text(
                    "CREATE FUNCTION cw_fail() RETURNS trigger AS $$ "
                    "BEGIN RAISE EXCEPTION 'injected failure'; END $$ LANGUAGE plpgsql"
                )
            )
            await s.execute(
                text(
                    "CREATE TRIGGER cw_fail BEFORE UPDATE ON chat_messages "
                    f"FOR EACH ROW {pg_when}"
                    "EXECUTE FUNCTION cw_fail()"
                )
            )


async def _heal(db: Database) -> None:
    async with db.session() as s:
        await s.execute(
            text("DROP TRIGGER cw_fail" if db.is_sqlite else "DROP TRIGGER cw_fail ON chat_messages")
        )


async def test_failing_writes_are_retried_and_reported_without_blocking_delivery(db: Database) -> None:
    chat_id = await make_chat(db)
    writer = MessageWriter(MessageStore(db), flush_interval=0.01, retry_max_delay=0.05)
    broker = RecordingBroker()
    events = ChatEvents(broker, MemorySessionStore(60, 3), writer, call_timeout=1)
    await events.emit("u1", chat_id, "m", delta("before "))
    await writer.flush()
    await _inject_write_failure(db)
    for i in range(50):
        await events.emit("u1", chat_id, "m", delta(f"{i} "))
    # Every event reached the user's room although no write succeeds.
    assert len(broker.sent) == 51 and all(room == "user:u1" for _, _, room in broker.sent)
    for _ in range(200):
        if writer.stats.failures >= 3:
            break
        await asyncio.sleep(0.02)
    assert writer.stats.failures >= 3
    assert (await stored(db, chat_id, "m")).content == "before "
    await _heal(db)
    await events.emit("u1", chat_id, "m", DONE)
    await asyncio.wait_for(writer.flush(), 10)
    assert (await stored(db, chat_id, "m")).content == "before " + "".join(f"{i} " for i in range(50))
    await writer.close()


class CountingStore(MessageStore):
    """A MessageStore that records how many patches each transaction held."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.batches: list[int] = []

    async def write_patches(self, patches: Sequence[MessagePatch]) -> list[bool]:
        self.batches.append(len(patches))
        return await super().write_patches(patches)


class HeldStore(MessageStore):
    """A MessageStore whose group writes never finish (a database that hangs), to cancel the writer mid-write."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.entered = asyncio.Event()

    async def write_patches(self, patches: Sequence[MessagePatch]) -> list[bool]:
        self.entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_group_write_cancelled_mid_flight_answers_its_waiters(db: Database) -> None:
    chat_id = await make_chat(db)
    store = HeldStore(db)
    writer = MessageWriter(store, flush_interval=0.01)
    in_flight = asyncio.create_task(writer._commit(MessagePatch(chat_id, "a", content="a")))
    await asyncio.wait_for(store.entered.wait(), 5)
    queued = asyncio.create_task(writer._commit(MessagePatch(chat_id, "b", content="b")))
    await asyncio.sleep(0)
    committer = writer._committer
    assert committer is not None
    committer.cancel()  # as a shutdown does
    for waiter in (in_flight, queued):  # cancelled, not left waiting for an answer that never comes
        done, _ = await asyncio.wait([waiter], timeout=5)
        assert done and waiter.cancelled()
    assert writer._committer is None


async def test_messages_due_together_are_written_in_one_transaction(db: Database) -> None:
    chat_id = await make_chat(db)
    store = CountingStore(db)
    writer = MessageWriter(store, flush_interval=0.2)
    for i in range(20):  # the rows are created first (as ChatRepo.add_turn does before an answer streams)
        writer.submit(chat_id, f"m{i}", delta(f"text {i}"))
    await writer.flush()
    store.batches.clear()
    for i in range(20):
        writer.submit(chat_id, f"m{i}", delta(" more"))
    for _ in range(100):  # the next flush tick writes them, without being asked
        if writer.stats.writes == 40:
            break
        await asyncio.sleep(0.02)
    assert store.batches == [20]  # one tick for all: one transaction
    for i in range(20):
        assert (await stored(db, chat_id, f"m{i}")).content == f"text {i} more"
    await writer.close()


async def test_a_failing_patch_does_not_fail_the_others_of_its_transaction(db: Database) -> None:
    chat_id = await make_chat(db)
    store = CountingStore(db)
    writer = MessageWriter(store, flush_interval=0.05, retry_max_delay=0.01, max_attempts=2)
    for name in ("a", "bad", "c"):  # rows first, so that every later write is an UPDATE
        writer.submit(chat_id, name, delta(f"{name}:"))
    await writer.flush()
    await _inject_write_failure(db, only="bad")
    for name in ("a", "bad", "c"):
        writer.submit(chat_id, name, delta("more"))
    await asyncio.wait_for(writer.flush(), 10)
    assert 3 in store.batches[1:]  # tried together, then one by one
    assert (await stored(db, chat_id, "a")).content == "a:more"
    assert (await stored(db, chat_id, "c")).content == "c:more"
    assert (await stored(db, chat_id, "bad")).content == "bad:"  # given up after max_attempts, alone
    assert writer.stats.abandoned >= 1
    await _heal(db)
    await writer.close()


async def test_delivery_does_not_wait_for_a_locked_database(db: Database) -> None:
    chat_id = await make_chat(db)
    store = MessageStore(db)
    await store.load_or_create(chat_id, "m")
    writer = MessageWriter(store, flush_interval=0.01)
    broker = RecordingBroker()
    events = ChatEvents(broker, MemorySessionStore(60, 3), writer, call_timeout=1)
    async with db.engine.connect() as blocker:
        # An open write transaction on the row: the writer's UPDATE waits behind it.
        await blocker.execute(update(ChatMessage).where(ChatMessage.id == "m").values(updated_at=1))
        for i in range(100):
            await asyncio.wait_for(events.emit("u1", chat_id, "m", delta(f"{i};")), 1)
        await asyncio.sleep(0.1)
        assert len(broker.sent) == 100
        assert writer.stats.writes == 0
        await blocker.rollback()
    await events.emit("u1", chat_id, "m", DONE)
    await asyncio.wait_for(writer.flush(), 30)
    assert (await stored(db, chat_id, "m")).content == "".join(f"{i};" for i in range(100))
    await writer.close()


async def test_shutdown_flushes_and_unknown_chats_are_dropped(db: Database) -> None:
    chat_id = await make_chat(db)
    writer = MessageWriter(MessageStore(db), flush_interval=60)
    writer.submit(chat_id, "m", delta("kept"))
    writer.submit("no-such-chat", "m", delta("lost"))
    await writer.close()
    assert (await stored(db, chat_id, "m")).content == "kept"
    assert writer.stats.dropped == 1
    assert not writer.submit(chat_id, "m", delta("late"))
    # Events that change no message field create no row.
    quiet = MessageWriter(MessageStore(db), flush_interval=0.01)
    quiet.submit(chat_id, "q", {"type": "chat:active", "data": {"active": True}})
    quiet.submit(chat_id, "q", {"type": "notification", "data": {"content": "x"}})
    await quiet.flush()
    assert await ChatRepo(db).get_message(chat_id, "q") is None
    await quiet.close()
    assert not MessageWriter(MessageStore(db)).submit("local:x", "m", delta("never"))


class JitterBroker(RecordingBroker):
    """A broker that suspends a random number of times before delivering, as a networked one does."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        import random

        self.rng = random.Random(seed)

    async def emit(self, event: str, data: Any, *, room: str, skip_sid: str | None = None) -> None:
        for _ in range(self.rng.randint(0, 3)):
            await asyncio.sleep(0)
        await super().emit(event, data, room=room, skip_sid=skip_sid)


async def three_streams(db: Database, broker: JitterBroker, max_pause: int = 0) -> tuple[str, str]:
    """Three emitters stream 300 deltas each into one message, then it ends: (delivered text, stored text).
    `max_pause`: up to that many loop turns between an emitter's tokens (random), so the message's gate drains."""
    chat_id = await make_chat(db)
    writer = MessageWriter(MessageStore(db), flush_interval=0.01)
    events = ChatEvents(broker, MemorySessionStore(60, 3), writer, call_timeout=1)
    emitters = [
        events.get_event_emitter({"user_id": "u1", "chat_id": chat_id, "message_id": "m"}) for _ in range(3)
    ]

    async def stream(k: int) -> None:
        for i in range(300):
            await emitters[k](delta(f"<{k}.{i}>"))
            for _ in range(broker.rng.randint(0, max_pause) if max_pause else 0):
                await asyncio.sleep(0)

    await asyncio.gather(*(stream(k) for k in range(3)))
    await emitters[0](DONE)
    await writer.flush()
    await writer.close()
    delivered = "".join(
        data["data"]["data"]["content"] for _, data, _ in broker.sent if data["data"]["type"] == "message"
    )
    assert len(broker.sent) == 901
    return delivered, (await stored(db, chat_id, "m")).content


async def test_concurrent_emitters_one_order_for_tabs_and_database(db: Database) -> None:
    delivered, kept = await three_streams(db, JitterBroker(seed=3))
    assert kept == delivered


class SometimesNowBroker(JitterBroker):
    """A broker that can deliver without awaiting (EmitsNow) but declines at random, as the own engine does while
    an awaiting log append is in progress: emits then mix the synchronous path and the locked, awaiting one."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.now = 0

    def emit_now(self, event: str, data: Any, *, room: str, skip_sid: str | None = None) -> bool:
        if self.rng.random() < 0.3:
            return False
        self.now += 1
        self.sent.append((event, data, room))
        return True


async def test_emits_without_await_never_overtake_awaiting_ones(db: Database) -> None:
    broker = SometimesNowBroker(seed=5)
    delivered, kept = await three_streams(db, broker, max_pause=4)
    assert 100 < broker.now < 800  # both paths really taken
    assert kept == delivered
    for k in range(3):
        assert re.findall(rf"<{k}\.(\d+)>", delivered) == [str(i) for i in range(300)]


class HeldBroker(RecordingBroker):
    """Delivers at once (EmitsNow) until `hold` is set; then every delivery declines to emit now and awaits."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.release = asyncio.Event()

    def emit_now(self, event: str, data: Any, *, room: str, skip_sid: str | None = None) -> bool:
        if self.hold:
            return False
        self.sent.append((event, data, room))
        return True

    async def emit(self, event: str, data: Any, *, room: str, skip_sid: str | None = None) -> None:
        await self.release.wait()
        self.sent.append((event, data, room))


async def test_an_emit_behind_an_awaiting_one_of_its_message_waits_for_it(db: Database) -> None:
    chat_id = await make_chat(db)
    writer = MessageWriter(MessageStore(db), flush_interval=0.01)
    broker = HeldBroker()
    events = ChatEvents(broker, MemorySessionStore(60, 3), writer, call_timeout=1)
    await events.emit("u1", chat_id, "m", delta("a"))
    broker.hold = True
    first = asyncio.ensure_future(events.emit("u1", chat_id, "m", delta("b")))
    await asyncio.sleep(0)  # `b` now waits in the broker's emit, holding its message's gate
    broker.hold = False  # the broker could deliver now again: a later `c` of the same message still must not
    second = asyncio.ensure_future(events.emit("u1", chat_id, "m", delta("c")))
    await events.emit("u1", chat_id, "other", delta("x"))  # another message is not held up
    await asyncio.sleep(0.01)
    assert [data["data"]["data"]["content"] for _, data, _ in broker.sent] == ["a", "x"]
    broker.release.set()
    await asyncio.gather(first, second)
    await events.emit("u1", chat_id, "m", DONE)
    assert [data["data"]["data"]["content"] for _, data, _ in broker.sent[:4]] == ["a", "x", "b", "c"]
    await writer.flush()
    assert (await stored(db, chat_id, "m")).content == "abc"
    await writer.close()


async def test_growing_full_content_completions_are_written_as_appends(db: Database) -> None:
    # Open WebUI's middleware streams `chat:completion {content: <everything so far>}`; storing that must stay O(n).
    chat_id = await make_chat(db)
    writer = MessageWriter(MessageStore(db), flush_interval=0.005)
    text = ""
    for i in range(300):
        text += f"token{i} "
        writer.submit(chat_id, "m", {"type": "chat:completion", "data": {"content": text}})
        if i % 20 == 0:
            await asyncio.sleep(0.01)
    writer.submit(chat_id, "m", {"type": "chat:completion", "data": {"content": text, "done": True}})
    await writer.flush()
    assert (await stored(db, chat_id, "m")).content == text
    assert writer.stats.writes > 3
    assert writer.stats.bytes_written < len(text) + 200
    await writer.close()
