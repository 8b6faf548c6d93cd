"""Recovery and catch-up with Python clients: the SDK recovers, plain python-socketio clients are left unchanged,
a new tab catches up on the user's stream, and a half-open old connection is taken over."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import socketio

from chatwire.client.recovery import RecoveringClient
from chatwire.config import Settings
from chatwire.transport.hub import looks_like_python_client
from tests.conftest import RunningServer, run_server
from tests.proxy import CuttableProxy
from tests.sio import RecordingClient


class SdkClient:
    """chatwire's recovering client, recording `events {n}` and each connect's `recovered`."""

    def __init__(self) -> None:
        self.sio = RecoveringClient(reconnection_delay=0.3, reconnection_delay_max=1)
        self.numbers: list[int] = []
        self.connects: list[bool] = []

        @self.sio.on("events")
        async def events(data: Any) -> None:  # one parameter: the offset never reaches handlers
            self.numbers.append(data["n"])

        @self.sio.event
        async def connect() -> None:
            self.connects.append(self.sio.recovered)

    async def connect(self, url: str, token: str, **auth: Any) -> SdkClient:
        await self.sio.connect(
            url,
            auth={"token": token, **auth},
            socketio_path="ws/socket.io",
            transports=["websocket"],
            wait_timeout=10,
        )
        ack = await self.sio.call("user-join", {"auth": {"token": token}}, timeout=10)
        assert "error" not in ack, ack
        return self


async def until(predicate: Any, timeout: float = 15) -> None:
    """Poll state that client callbacks change (they have no event to wait on)."""

    async def loop() -> None:
        while not predicate():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(loop(), timeout)


async def emit_range(server: RunningServer, room: str, start: int, stop: int, pause: float = 0.0) -> None:
    for n in range(start, stop):
        await server.services.broker.emit("events", {"n": n}, room=room)
        if pause:
            await asyncio.sleep(pause)


@contextlib.asynccontextmanager
async def proxied(server: RunningServer) -> AsyncIterator[CuttableProxy]:
    proxy = await CuttableProxy(int(server.url.rsplit(":", 1)[1])).start()
    try:
        yield proxy
    finally:
        await proxy.close()


async def test_python_sdk_recovers_and_exposes_recovered(server: RunningServer) -> None:
    user = await server.signup("Ada")
    room = f"user:{user['id']}"
    async with proxied(server) as proxy:
        client = await SdkClient().connect(proxy.url, user["token"])
        try:
            await emit_range(server, room, 0, 50)
            await until(lambda: len(client.numbers) == 50)
            await proxy.cut()
            await emit_range(server, room, 50, 250, pause=0.002)
            await proxy.restore()
            await until(lambda: len(client.connects) == 2)
            await emit_range(server, room, 250, 300)
            await until(lambda: len(client.numbers) >= 300)
            await asyncio.sleep(0.2)
            assert client.connects == [False, True]
            assert client.numbers == list(range(300))
            assert client.sio.stream_offset is not None
        finally:
            await client.sio.disconnect()


async def test_plain_python_client_gets_no_offset_argument(server: RunningServer) -> None:
    user = await server.signup("Ada")
    plain = await RecordingClient(server.url).connect(user["token"])
    try:
        await server.services.broker.emit("events", {"n": 1}, room=f"user:{user['id']}")
        got = await plain.wait_for("events")
        assert got == {"n": 1}  # one argument: a one-parameter handler keeps working
        # the same event still went into the log, for recovering clients and catch-up
        log = server.services.eventlog
        entries = await log.read(f"{await log.epoch()}-0", [f"user:{user['id']}"])
        assert entries is not None and [e.data for e in entries] == [{"n": 1}]
    finally:
        await plain.close()


async def test_offsets_setting_always_and_explicit_opt_out(settings: Settings) -> None:
    async with run_server(settings.model_copy(update={"recovery_offsets": "always"})) as server:
        user = await server.signup("Ada")
        plain = await RecordingClient(server.url).connect(user["token"])
        try:
            await server.services.broker.emit("events", {"n": 1}, room=f"user:{user['id']}")
            data, offset = await plain.wait_for("events")
            assert data == {"n": 1} and offset == await server.services.eventlog.head()
        finally:
            await plain.close()
    async with run_server(settings) as server:
        user = await server.signup("Ada")
        client = await SdkClient().connect(server.url, user["token"], offsets=False)
        try:
            assert client.sio._cw_pid is None  # no offsets asked: no pid, no recovery
        finally:
            await client.sio.disconnect()


def test_python_clients_are_told_apart_at_the_handshake() -> None:
    assert looks_like_python_client({"HTTP_USER_AGENT": "Python/3.11 aiohttp/3.9.5"})
    assert looks_like_python_client({"HTTP_USER_AGENT": "python-requests/2.31"})
    assert looks_like_python_client({"QUERY_STRING": "transport=websocket&EIO=4"})
    assert not looks_like_python_client({"QUERY_STRING": "EIO=4&transport=websocket"})
    assert not looks_like_python_client(
        {"HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64)", "QUERY_STRING": "EIO=4&transport=polling&t=P1"}
    )


async def test_recovery_with_a_wrong_or_unknown_pid_is_fresh(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    async with proxied(server) as proxy:
        first = await SdkClient().connect(proxy.url, ada["token"])
        pid = first.sio._cw_pid
        assert pid is not None
        await proxy.cut()  # parks Ada's session
        await until(lambda: not first.sio.connected)
        await first.sio.disconnect()
        thief = SdkClient()
        thief.sio._cw_pid = pid  # Bob presents Ada's pid: refused, and Ada's session stays unclaimed by him
        await thief.connect(server.url, bob["token"])
        try:
            assert thief.connects == [False] and thief.sio._cw_pid != pid
            assert f"user:{ada['id']}" not in await server.services.broker.rooms_of(thief.sio.get_sid())
        finally:
            await thief.sio.disconnect()
        owner = SdkClient()
        owner.sio._cw_pid = pid  # Bob's attempt did not use it up: Ada still recovers
        await owner.connect(server.url, ada["token"])
        try:
            assert owner.connects == [True]
        finally:
            await owner.sio.disconnect()
        stranger = SdkClient()
        stranger.sio._cw_pid = "no-such-pid"
        await stranger.connect(server.url, ada["token"])
        try:
            assert stranger.connects == [False]
        finally:
            await stranger.sio.disconnect()


async def test_half_open_old_connection_is_taken_over(server: RunningServer) -> None:
    """The client comes back before the server noticed the old connection died (a phone changing network):
    the old session is ended, parked and recovered by the new connection."""
    user = await server.signup("Ada")
    room = f"user:{user['id']}"
    old = await SdkClient().connect(server.url, user["token"])
    new = SdkClient()
    try:
        await emit_range(server, room, 0, 10)
        await until(lambda: len(old.numbers) == 10)
        new.sio._cw_pid, new.sio._cw_offset = old.sio._cw_pid, old.sio.stream_offset
        old_sid = old.sio.get_sid()
        await emit_range(server, room, 10, 20)  # "lost" on the old line as far as the new one knows
        await new.connect(server.url, user["token"])
        await emit_range(server, room, 20, 30)
        await until(lambda: len(new.numbers) >= 20)
        await asyncio.sleep(0.2)
        assert new.connects == [True]
        assert new.numbers == list(range(10, 30))
        assert old_sid not in await server.services.broker.room_sids(room)
    finally:
        with contextlib.suppress(Exception):
            await old.sio.disconnect()
        await new.sio.disconnect()


async def test_sdk_deliberate_disconnect_starts_fresh(server: RunningServer) -> None:
    user = await server.signup("Ada")
    client = await SdkClient().connect(server.url, user["token"])
    await client.sio.disconnect()
    assert client.sio._cw_pid is None  # a deliberate disconnect gives up recovery
    await client.connect(server.url, user["token"])
    try:
        assert client.connects == [False, False]
    finally:
        await client.sio.disconnect()


async def _new_chat(server: RunningServer, token: str) -> str:
    async with server.http(token) as http:
        r = await http.post("/api/v1/chats/new", json={"chat": {"title": "t", "messages": []}})
        assert r.status_code == 200, r.text
        return str(r.json()["id"])


async def _stream_offset(server: RunningServer, token: str, chat_id: str) -> str:
    async with server.http(token) as http:
        r = await http.get(f"/api/v1/chats/{chat_id}")
        assert r.status_code == 200, r.text
        offset = r.json()["stream_offset"]
        assert isinstance(offset, str)
        return offset


async def test_new_tab_catches_up_mid_stream(server: RunningServer) -> None:
    """A tab opened in the middle of a stream: REST read (stream_offset), then `user-join {since}` while the
    stream goes on: it gets everything after the offset exactly once, in order."""
    user = await server.signup("Ada")
    room = f"user:{user['id']}"
    chat_id = await _new_chat(server, user["token"])
    await emit_range(server, room, 0, 50)
    offset = await _stream_offset(server, user["token"], chat_id)
    await emit_range(server, room, 50, 80)
    producer = asyncio.create_task(emit_range(server, room, 80, 400, pause=0.001))
    tab = await RecordingClient(server.url).connect(None, join=False)
    try:
        await asyncio.sleep(0.05)  # mid-stream
        ack = await tab.call("user-join", {"auth": {"token": user["token"]}, "since": offset})
        assert ack["id"] == user["id"] and ack["caught_up"] >= 30
        await producer
        await tab.wait_for("events", lambda d: d["n"] == 399, timeout=10)
        await asyncio.sleep(0.1)
        assert [d["n"] for d in tab.received["events"]] == list(range(50, 400))
    finally:
        producer.cancel()
        await tab.close()


async def test_new_tab_with_token_at_connect_catches_up_without_duplicates(server: RunningServer) -> None:
    user = await server.signup("Ada")
    room = f"user:{user['id']}"
    chat_id = await _new_chat(server, user["token"])
    offset = await _stream_offset(server, user["token"], chat_id)
    await emit_range(server, room, 0, 20)
    tab = await RecordingClient(server.url).connect(user["token"], join=False)  # already in user:{id}
    try:
        await emit_range(server, room, 20, 30)  # live for this tab
        ack = await tab.call("user-join", {"auth": {"token": user["token"]}, "since": offset})
        assert ack["caught_up"] == 20
        await emit_range(server, room, 30, 40)
        await tab.wait_for("events", lambda d: d["n"] == 39)
        assert sorted(d["n"] for d in tab.received["events"]) == list(range(40))  # each exactly once
    finally:
        await tab.close()


async def test_catch_up_from_an_unknown_epoch_says_so(server: RunningServer) -> None:
    user = await server.signup("Ada")
    tab = await RecordingClient(server.url).connect(None, join=False)
    try:
        ack = await tab.call("user-join", {"auth": {"token": user["token"]}, "since": "oldepoch-12"})
        assert ack["caught_up"] is False and ack["id"] == user["id"]
        bad = await tab.call("user-join", {"auth": {"token": "nope"}, "since": "x-1"})
        assert bad["error"]["code"] == "unauthorized"
        await server.services.broker.emit("events", {"n": 1}, room=f"user:{user['id']}")
        assert await tab.wait_for("events") == {"n": 1}  # nothing stays held back
    finally:
        await tab.close()


async def test_plain_sio_client_handshake_is_detected_as_python(server: RunningServer) -> None:
    user = await server.signup("Ada")
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(
        server.url, auth={"token": user["token"]}, socketio_path="ws/socket.io", transports=["websocket"]
    )
    try:
        realtime = server.app.state.realtime
        assert realtime.recovery.pid_of(sio.get_sid()) is None
    finally:
        await sio.disconnect()


async def test_rooms_are_restored_with_access_checked_again(server: RunningServer) -> None:
    """Channel rooms come back without a new user-join, and their missed messages are replayed; a channel the user
    was removed from while away is not restored."""
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    async with server.http(ada["token"]) as http:
        keep = (
            await http.post(
                "/api/v1/channels/create", json={"name": "keep", "type": "group", "user_ids": [bob["id"]]}
            )
        ).json()["id"]
        gone = (
            await http.post(
                "/api/v1/channels/create", json={"name": "gone", "type": "group", "user_ids": [bob["id"]]}
            )
        ).json()["id"]
    contents: list[tuple[str, str]] = []
    async with proxied(server) as proxy:
        client = await SdkClient().connect(proxy.url, bob["token"])

        @client.sio.on("events:channel")
        async def channel_event(data: Any) -> None:
            if data["data"]["type"] == "message":
                contents.append((data["channel_id"], data["data"]["data"]["content"]))

        try:
            away = client.sio.get_sid()
            await proxy.cut()
            # the dropped session is gone from the server (and so from its channel rooms)
            await until(lambda: away not in server.app.state.realtime.ctx.local)
            async with server.http(ada["token"]) as http:
                await http.post(f"/api/v1/channels/{keep}/messages/post", json={"content": "while away"})
                await http.post(
                    f"/api/v1/channels/{gone}/update/members/remove", json={"user_ids": [bob["id"]]}
                )
                await http.post(f"/api/v1/channels/{gone}/messages/post", json={"content": "secret"})
            await proxy.restore()
            await until(lambda: len(client.connects) == 2)
            async with server.http(ada["token"]) as http:
                await http.post(f"/api/v1/channels/{keep}/messages/post", json={"content": "after"})
                await http.post(f"/api/v1/channels/{gone}/messages/post", json={"content": "secret 2"})
            await until(lambda: (keep, "after") in contents)
            await asyncio.sleep(0.2)
            assert client.connects == [False, True]
            assert contents == [(keep, "while away"), (keep, "after")]
            rooms = await server.services.broker.rooms_of(client.sio.get_sid())
            assert f"channel:{keep}" in rooms and f"channel:{gone}" not in rooms
        finally:
            await client.sio.disconnect()


async def test_window_zero_disables_recovery(settings: Settings) -> None:
    async with run_server(settings.model_copy(update={"recovery_window_seconds": 0})) as server:
        user = await server.signup("Ada")
        client = await SdkClient().connect(server.url, user["token"])
        try:
            assert client.sio._cw_pid is None
            await server.services.broker.emit("events", {"n": 1}, room=f"user:{user['id']}")
            await until(lambda: client.numbers == [1])
        finally:
            await client.sio.disconnect()


async def test_another_user_cannot_take_over_a_live_session(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    owner = await SdkClient().connect(server.url, ada["token"])
    thief = SdkClient()
    thief.sio._cw_pid = owner.sio._cw_pid
    await thief.connect(server.url, bob["token"])
    try:
        assert thief.connects == [False]
        assert owner.sio.connected and owner.connects == [False]
        await server.services.broker.emit("events", {"n": 1}, room=f"user:{ada['id']}")
        await until(lambda: owner.numbers == [1])
        assert thief.numbers == []
    finally:
        await thief.sio.disconnect()
        await owner.sio.disconnect()


async def test_concurrent_publishers_recover_complete_and_in_offset_order(server: RunningServer) -> None:
    """Three tasks publish at once while the line is cut: the client ends with every event once, each
    publisher's events in order, and the offsets it processed strictly increasing."""
    user = await server.signup("Ada")
    room = f"user:{user['id']}"
    seen: list[tuple[int, int]] = []
    offsets: list[int] = []

    async with proxied(server) as proxy:
        client = await SdkClient().connect(proxy.url, user["token"])

        @client.sio.on("work")
        async def work(data: Any) -> None:
            seen.append((data["p"], data["i"]))
            offset = client.sio._cw_pid and client.sio.stream_offset
            if isinstance(offset, str):
                offsets.append(int(offset.rsplit("-", 1)[1]))

        async def publisher(p: int) -> None:
            for i in range(150):
                await server.services.broker.emit("work", {"p": p, "i": i}, room=room)
                if i % 10 == 0:
                    await asyncio.sleep(0.005)

        try:
            producers = [asyncio.create_task(publisher(p)) for p in range(3)]
            await asyncio.sleep(0.03)
            await proxy.cut()
            await asyncio.gather(*producers)
            await proxy.restore()
            await until(lambda: len(client.connects) == 2 and len(seen) >= 450)
            await asyncio.sleep(0.2)
            assert client.connects == [False, True]
            assert len(seen) == 450 and len(set(seen)) == 450
            for p in range(3):
                assert [i for q, i in seen if q == p] == list(range(150))
        finally:
            await client.sio.disconnect()
    # The offset recorded after each handler call is the one of the previous event (the SDK stores it after the
    # handler returns), so compare the sequence without its first element.
    assert offsets[1:] == sorted(offsets[1:]) and len(set(offsets[1:])) == len(offsets[1:])


async def test_new_tab_with_since_in_connect_auth_gets_exact_order(server: RunningServer) -> None:
    """`since` in the CONNECT auth: the catch-up comes right after the CONNECT reply, before any live event."""
    user = await server.signup("Ada")
    room = f"user:{user['id']}"
    chat_id = await _new_chat(server, user["token"])
    await emit_range(server, room, 0, 30)
    offset = await _stream_offset(server, user["token"], chat_id)
    await emit_range(server, room, 30, 60)
    producer = asyncio.create_task(emit_range(server, room, 60, 300, pause=0.001))
    tab = RecordingClient(server.url)
    try:
        await asyncio.sleep(0.02)
        await tab.sio.connect(
            server.url,
            auth={"token": user["token"], "since": offset},
            socketio_path="ws/socket.io",
            transports=["websocket"],
        )
        await producer
        await tab.wait_for("events", lambda d: d["n"] == 299, timeout=10)
        await asyncio.sleep(0.1)
        assert [d["n"] for d in tab.received["events"]] == list(range(30, 300))
    finally:
        producer.cancel()
        await tab.close()


async def test_string_ending_event_outside_the_log_is_not_taken_for_an_offset(server: RunningServer) -> None:
    """A client takes a string last argument for an offset; events outside the log that end with a string carry
    the client's current offset after it, so its position stays right."""
    user = await server.signup("Ada")
    client = await SdkClient().connect(server.url, user["token"])
    got: list[Any] = []

    @client.sio.on("direct")
    async def direct(data: Any) -> None:
        got.append(data)

    try:
        await server.services.broker.emit("events", {"n": 1}, room=f"user:{user['id']}")
        await until(lambda: client.numbers == [1])
        position = client.sio.stream_offset
        assert position == await server.services.eventlog.head()
        await server.services.broker.emit("direct", "hello", room=client.sio.get_sid())
        await until(lambda: got == ["hello"])
        assert client.sio.stream_offset == position
    finally:
        await client.sio.disconnect()
