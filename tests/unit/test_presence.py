"""PresenceService's heartbeat writes: at most one last_active_at write per user a minute, and a table of write
times that keeps only the users who wrote lately."""

from __future__ import annotations

from chatwire.backends.sessions_memory import MemorySessionStore
from chatwire.services.presence import LAST_ACTIVE_WRITE_INTERVAL, PresenceService


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Touches:
    """Stands in for the user repository (UserRepo): records each last_active_at write."""

    def __init__(self) -> None:
        self.written: list[str] = []

    async def touch(self, user_id: str, at: int) -> None:
        self.written.append(user_id)


def service(clock: Clock, users: Touches) -> PresenceService:
    sessions = MemorySessionStore(presence_ttl=120, usage_ttl=120, clock=clock)
    return PresenceService(sessions, users, clock=clock)  # type: ignore[arg-type]


async def test_heartbeats_write_last_active_once_an_interval() -> None:
    clock, users = Clock(), Touches()
    presence = service(clock, users)
    await presence.heartbeat("s1", "u1")
    clock.now += LAST_ACTIVE_WRITE_INTERVAL / 2
    await presence.heartbeat("s1", "u1")
    assert users.written == ["u1"]
    clock.now += LAST_ACTIVE_WRITE_INTERVAL / 2
    await presence.heartbeat("s1", "u1")
    assert users.written == ["u1", "u1"]


async def test_write_times_of_users_gone_quiet_are_forgotten() -> None:
    """Every user who ever sent a heartbeat used to keep an entry for the life of the process."""
    clock, users = Clock(), Touches()
    presence = service(clock, users)
    for i in range(100):
        await presence.heartbeat(f"s{i}", f"u{i}")
    assert presence.write_times_held() == 100
    clock.now += LAST_ACTIVE_WRITE_INTERVAL + 1
    await presence.heartbeat("s0", "u0")
    assert presence.write_times_held() == 1
    assert users.written.count("u0") == 2
    # a user who is still active keeps its entry, so its writes stay one an interval
    clock.now += LAST_ACTIVE_WRITE_INTERVAL / 2
    await presence.heartbeat("s0", "u0")
    assert users.written.count("u0") == 2
