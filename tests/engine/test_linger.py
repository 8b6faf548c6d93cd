"""Lingering frames (EngineConfig.linger, CHATWIRE_DELTA_LINGER_MS): chat deltas wait to share a write, never
overtake or get stuck behind another frame, and leave at the latest with the turn's end or the session's close."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chatwire.engine.eio import DirectConsumer, EngineConfig, EngineServer, Frame, Session
from chatwire.engine.state import EioState

NEVER = 3600.0  # a linger that cannot run out during a test: only the rules under test release the frames


class Handler:
    def on_open(self, session: Session) -> None:
        pass

    async def on_message(self, session: Session, data: str | bytes) -> None:
        pass

    def on_close(self, session: Session, reason: str) -> None:
        pass


class Connection:
    """A DirectWebSocket that records each write (one list of frames per write)."""

    def __init__(self) -> None:
        self.writes: list[list[Frame]] = []
        self.closed: int | None = None

    @property
    def writable(self) -> bool:
        return self.closed is None

    def write_frames(self, frames: Sequence[Frame], flush: bool = False) -> None:
        self.writes.append(list(frames))

    def close(self, code: int) -> None:
        self.closed = code

    def attach(self, consumer: DirectConsumer | None) -> None:
        pass

    async def drain(self) -> None:
        pass

    @property
    def frames(self) -> list[Frame]:
        return [f for write in self.writes for f in write]


@dataclass
class Token:
    """A merge token as the hub's Delta: frames of one key may merge while the peer is not reading."""

    key: str

    def merge(self, later: Token) -> tuple[str, Token]:
        return "merged", later


def direct_session(linger: float) -> tuple[Session, Connection]:
    engine = EngineServer(Handler(), EngineConfig(linger=linger))
    session = Session(engine, "sid", {}, EioState.WEBSOCKET)
    connection = Connection()
    session.attach_direct(connection)
    return session, connection


def delta(session: Session, text: str) -> None:
    session.push_coalescing("4" + text, Token("m1"), linger=True)


async def turn() -> None:
    """Let the loop finish this turn (direct writes happen at its end)."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_no_linger_writes_a_delta_at_the_end_of_its_turn() -> None:
    session, connection = direct_session(0)
    delta(session, "a")
    await turn()
    assert connection.writes == [["4a"]]


async def test_lingering_deltas_leave_with_the_next_other_frame_in_order_in_one_write() -> None:
    session, connection = direct_session(NEVER)
    delta(session, "a")
    delta(session, "b")
    await turn()
    assert connection.writes == []  # held: nothing else asked for a write
    session.push("4done")  # a turn's end (chat:completion done) is no delta
    delta(session, "c")  # queued behind frames already on their way: no reason to hold it
    await turn()
    assert connection.writes == [["4a", "4b", "4done", "4c"]]


async def test_held_deltas_arrive_once_the_linger_runs_out_coalesced_into_one_write() -> None:
    session, connection = direct_session(0.005)
    for text in "abc":
        delta(session, text)
    for _ in range(1000):  # no deadline on the linger itself: only that it comes
        if connection.writes:
            break
        await asyncio.sleep(0.005)
    assert connection.writes == [["4a", "4b", "4c"]]
    delta(session, "d")  # the next group lingers on its own timer
    for _ in range(1000):
        if len(connection.writes) > 1:
            break
        await asyncio.sleep(0.005)
    assert connection.writes[1:] == [["4d"]]


async def test_a_burst_past_the_frame_bound_is_written_at_once() -> None:
    session, connection = direct_session(NEVER)
    bound = session.engine.config.linger_max_frames
    for n in range(bound):
        delta(session, str(n))
    await turn()
    assert connection.frames == ["4" + str(n) for n in range(bound)]
    assert len(connection.writes) == 1


async def test_a_burst_past_the_byte_bound_is_written_at_once() -> None:
    session, connection = direct_session(NEVER)
    big = "x" * (session.engine.config.linger_max_bytes // 2)
    delta(session, big)
    await turn()
    assert connection.writes == []
    delta(session, big)
    await turn()
    assert connection.writes == [["4" + big, "4" + big]]


async def test_close_writes_the_held_deltas_before_closing() -> None:
    session, connection = direct_session(NEVER)
    delta(session, "a")
    session.close("server disconnect")
    await turn()
    assert connection.frames == ["4a"]
    assert connection.closed == 1000


async def test_a_waiting_writer_is_not_woken_by_lingering_frames_only() -> None:
    engine = EngineServer(Handler(), EngineConfig(linger=NEVER))
    session = Session(engine, "sid", {}, EioState.WEBSOCKET)  # no direct connection: a writer task waits
    delta(session, "a")
    waiting: asyncio.Task[Any] = asyncio.ensure_future(session.wait_output())
    await turn()
    assert not waiting.done()
    session.release_linger()  # what the linger timer does
    await asyncio.wait_for(waiting, 10)
    assert session.take() == ["4a"]
