"""Socket events of docs/PROTOCOL.md sections 1-3, each fix, and the limits that keep a connection alive."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
import socketio

from chatwire.config import Settings
from chatwire.logs import JsonFormatter
from tests.conftest import RunningServer, run_server
from tests.dbsnap import snapshot
from tests.sio import RecordingClient


async def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def rooms(server: RunningServer, client: RecordingClient) -> list[str]:
    return await server.services.broker.rooms_of(client.sio.get_sid())  # type: ignore[no-any-return]


async def group(server: RunningServer, owner: dict[str, Any], *others: dict[str, Any]) -> str:
    async with server.http(owner["token"]) as http:
        r = await http.post(
            "/api/v1/channels/create",
            json={"name": "g", "type": "group", "user_ids": [o["id"] for o in others]},
        )
        assert r.status_code == 200, r.text
        return r.json()["id"]  # type: ignore[no-any-return]


# connection and authentication


async def test_expired_and_foreign_tokens_are_refused_at_connect(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    expired = jwt.encode(
        {"id": ada["id"], "jti": "x", "exp": int(time.time()) - 10}, server.settings.jwt_secret, "HS256"
    )
    forged = jwt.encode(
        {"id": ada["id"], "exp": int(time.time()) + 60}, "another-secret-" + "k" * 40, "HS256"
    )
    for token, message in ((expired, "token expired"), (forged, "invalid token")):
        client = RecordingClient(server.url)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(token)
        assert client.connect_error == {"message": message, "data": {"code": "unauthorized"}}
    assert server.services.sessions._sessions == {}


async def test_signout_refuses_the_token_and_ends_its_live_sessions(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    async with server.http() as http:
        r = await http.post("/api/v1/auths/signin", json={"email": ada["email"], "password": "pw-xxxxxxxx"})
        other_token = r.json()["token"]
    doomed = await RecordingClient(server.url).connect(ada["token"])
    kept = await RecordingClient(server.url).connect(other_token)
    try:
        async with server.http(ada["token"]) as http:
            assert (await http.post("/api/v1/auths/signout")).status_code == 200
        await wait_until(lambda: not doomed.sio.connected)
        assert kept.sio.connected and await kept.call("heartbeat", {}) is None

        again = RecordingClient(server.url)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await again.connect(ada["token"])
        assert again.connect_error == {"message": "token revoked", "data": {"code": "unauthorized"}}
        # nor can an anonymous session authenticate with it afterwards
        anon = await RecordingClient(server.url).connect(None, join=False)
        try:
            ack = await anon.call("user-join", {"auth": {"token": ada["token"]}})
            assert ack["error"]["code"] == "unauthorized"
        finally:
            await anon.close()
    finally:
        await doomed.close()
        await kept.close()


async def test_other_users_token_is_refused_by_every_join(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    cid = await group(server, bob)
    async with server.http(bob["token"]) as http:
        nid = (await http.post("/api/v1/notes/create", json={"title": "b"})).json()["id"]
    client = await RecordingClient(server.url).connect(ada["token"])
    try:
        for event, payload in (
            ("user-join", {"auth": {"token": bob["token"]}}),
            ("join-channels", {"auth": {"token": bob["token"]}}),
            ("join-note", {"note_id": nid, "auth": {"token": bob["token"]}}),
        ):
            ack = await client.call(event, payload)
            assert ack["error"]["code"] == "user_mismatch", (event, ack)
        joined = await rooms(server, client)
        assert f"user:{bob['id']}" not in joined and f"channel:{cid}" not in joined
        assert f"note:{nid}" not in joined
    finally:
        await client.close()


async def test_join_channels_enters_every_channel_room(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    first = await group(server, ada, bob)
    client = await RecordingClient(server.url).connect(bob["token"], join=False)
    try:
        assert await rooms(server, client) == [f"user:{bob['id']}"]
        assert await client.call("join-channels", {"auth": {"token": bob["token"]}}) == {"rooms": 1}
        assert f"channel:{first}" in await rooms(server, client)
        second = await group(server, ada, bob)  # creation puts live sessions in the room at once
        assert f"channel:{second}" in await rooms(server, client)
        assert await client.call("join-channels", {}) == {"rooms": 2}
        bad = await client.call("join-channels", {"auth": {"token": 5}})
        assert bad["error"]["code"] == "invalid_payload"
    finally:
        await client.close()


async def test_join_note_needs_read_access_and_revoking_removes_the_session(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    async with server.http(bob["token"]) as http:
        nid = (await http.post("/api/v1/notes/create", json={"title": "b"})).json()["id"]
    # ada is the first user, so an admin: give eve the role of a plain user instead
    eve = await server.signup("Eve")
    client = await RecordingClient(server.url).connect(eve["token"])
    admin = await RecordingClient(server.url).connect(ada["token"])
    try:
        denied = await client.call("join-note", {"note_id": nid, "auth": {"token": eve["token"]}})
        assert denied["error"]["code"] == "not_found"
        assert f"note:{nid}" not in await rooms(server, client)
        assert await admin.call("join-note", {"note_id": nid}) == {"note_id": nid}

        async with server.http(bob["token"]) as http:
            r = await http.post(
                f"/api/v1/notes/{nid}/access/update",
                json={"access_control": {"read": {"user_ids": [eve["id"]]}}},
            )
            assert r.status_code == 200
        assert await client.call("join-note", {"note_id": nid}) == {"note_id": nid}
        async with server.http(bob["token"]) as http:
            await http.post(f"/api/v1/notes/{nid}/update", json={"title": "renamed"})
        note = await client.wait_for("events:note", lambda n: n["id"] == nid)
        assert note["title"] == "renamed"

        async with server.http(bob["token"]) as http:
            await http.post(f"/api/v1/notes/{nid}/access/update", json={"access_control": None})
        assert f"note:{nid}" not in await rooms(server, client)
        assert f"note:{nid}" in await rooms(server, admin)
        bad = await client.call("join-note", {"auth": {"token": eve["token"]}})
        assert bad["error"]["code"] == "invalid_payload"
    finally:
        await client.close()
        await admin.close()


# presence and usage


async def test_heartbeat_marks_the_user_active(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    await server.services.users.touch(ada["id"], 0)
    client = await RecordingClient(server.url).connect(ada["token"])
    try:
        assert await client.call("heartbeat", {}) is None
        user = await server.services.users.get(ada["id"])
        assert user.last_active_at >= int(time.time()) - 5
    finally:
        await client.close()


async def test_usage_expires_after_three_seconds(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    a = await RecordingClient(server.url).connect(ada["token"])
    b = await RecordingClient(server.url).connect(bob["token"])
    try:
        assert await a.call("usage", {"model": "demo", "action": "generate", "chat_id": "c"}) is None
        assert await b.call("usage", {"model": "other"}) is None
        async with server.http(ada["token"]) as http:
            body = (await http.get("/api/usage")).json()
            assert body == {"model_ids": ["demo", "other"], "user_count": 2}
            bad = await a.call("usage", {"model": ""})
            assert bad["error"]["code"] == "invalid_payload"
            bad = await a.call("usage", {"model": "x" * 257})
            assert bad["error"]["code"] == "invalid_payload"
            await asyncio.sleep(server.settings.usage_ttl_seconds + 0.3)
            body = (await http.get("/api/usage")).json()
            assert body == {"model_ids": [], "user_count": 2}
        await b.close()
        await wait_until(lambda: len(server.services.sessions._by_user) == 1)
        async with server.http(ada["token"]) as http:
            assert (await http.get("/api/usage")).json()["user_count"] == 1
    finally:
        await a.close()
        await b.close()


# read markers


async def test_chat_read_marker_is_stored_and_sent_to_every_tab(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    async with server.http(ada["token"]) as http:
        chat_id = (await http.post("/api/v1/chats/new", json={"chat": {"title": "t"}})).json()["id"]
    tab1 = await RecordingClient(server.url).connect(ada["token"])
    tab2 = await RecordingClient(server.url).connect(ada["token"])
    other = await RecordingClient(server.url).connect(bob["token"])
    try:
        ack = await tab1.call("events:chat", {"chat_id": chat_id, "data": {"type": "last_read_at"}})
        assert ack["ok"] is True
        event = await tab2.wait_for("events", lambda e: e["chat_id"] == chat_id)
        assert event == {
            "chat_id": chat_id,
            "data": {"type": "chat:list", "data": {"chat_id": chat_id, "last_read_at": ack["last_read_at"]}},
        }
        async with server.http(ada["token"]) as http:
            assert (await http.get(f"/api/v1/chats/{chat_id}")).json()["last_read_at"] == ack["last_read_at"]

        before = await snapshot(server.services.db)
        refused = await other.call("events:chat", {"chat_id": chat_id, "data": {"type": "last_read_at"}})
        assert refused["error"]["code"] == "not_found"
        bad = await tab1.call("events:chat", {"chat_id": chat_id, "data": {"type": "title"}})
        assert bad["error"]["code"] == "invalid_payload"
        assert await snapshot(server.services.db) == before
        await other.expect_none("events", wait=0.2)
    finally:
        for c in (tab1, tab2, other):
            await c.close()


async def test_channel_read_marker_is_stored(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    cid = await group(server, ada, bob)
    async with server.http(ada["token"]) as http:
        await http.post(f"/api/v1/channels/{cid}/messages/post", json={"content": "hi"})
    client = await RecordingClient(server.url).connect(bob["token"])
    try:
        async with server.http(bob["token"]) as http:
            listed = (await http.get("/api/v1/channels/")).json()
            assert listed[0]["unread_count"] == 1
            ack = await client.call("events:channel", {"channel_id": cid, "data": {"type": "last_read_at"}})
            assert ack["ok"] is True
            channel = (await http.get(f"/api/v1/channels/{cid}")).json()
            assert channel["last_read_at"] == ack["last_read_at"]
            assert (await http.get("/api/v1/channels/")).json()[0]["unread_count"] == 0
        for payload in (
            {"channel_id": cid, "data": {"type": "typing"}},
            {"channel_id": cid, "data": {"type": "typing", "data": {"typing": "yes"}}},
            {"channel_id": cid, "data": {"type": "shout"}},
            {"data": {"type": "typing", "data": {"typing": True}}},
            "not an object",
        ):
            ack = await client.call("events:channel", payload)
            assert ack["error"]["code"] == "invalid_payload", payload
        missing = await client.call(
            "events:channel", {"channel_id": "nope", "data": {"type": "last_read_at"}}
        )
        assert missing["error"]["code"] == "not_found"
    finally:
        await client.close()


# limits: every refusal is an ack, and the connection keeps working


@pytest.fixture
async def strict_server(settings: Settings) -> AsyncIterator[RunningServer]:
    tight = settings.model_copy(
        update={"max_payload_bytes": 2048, "rate_limit_events": 2.0, "rate_limit_burst": 5}
    )
    async with run_server(tight) as running:
        yield running


async def test_oversized_payload_is_refused_and_connection_survives(strict_server: RunningServer) -> None:
    server = strict_server
    ada = await server.signup("Ada")
    cid = await group(server, ada)
    client = await RecordingClient(server.url).connect(ada["token"])
    try:
        ack = await client.call(
            "events:channel",
            {"channel_id": cid, "data": {"type": "typing", "data": {"typing": True, "pad": "x" * 4000}}},
        )
        assert ack["error"]["code"] == "payload_too_large"
        assert client.sio.connected
        assert await client.call("heartbeat", {}) is None
    finally:
        await client.close()


async def test_flood_is_rate_limited_and_connection_survives(strict_server: RunningServer) -> None:
    server = strict_server
    ada = await server.signup("Ada")
    client = await RecordingClient(server.url).connect(ada["token"])  # user-join took one token
    try:
        acks = await asyncio.gather(*(client.call("heartbeat", {}) for _ in range(12)))
        limited = [a for a in acks if a is not None]
        assert limited and all(a["error"]["code"] == "rate_limited" for a in limited)
        assert len(limited) >= 12 - 5
        await asyncio.sleep(1.0)  # the bucket refills at 2 events a second
        assert client.sio.connected
        assert await client.call("heartbeat", {}) is None
    finally:
        await client.close()


async def test_unknown_events_count_against_the_rate_limit(strict_server: RunningServer) -> None:
    ada = await strict_server.signup("Ada")
    client = await RecordingClient(strict_server.url).connect(ada["token"])
    try:
        acks = await asyncio.gather(*(client.call("spam", {}) for _ in range(12)))
        codes = [a["error"]["code"] for a in acks]
        assert "rate_limited" in codes and set(codes) == {"invalid_payload", "rate_limited"}
        assert client.sio.connected
    finally:
        await client.close()


async def test_handler_crash_is_an_internal_error_ack(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chatwire")
    ada = await server.signup("Ada")
    client = await RecordingClient(server.url).connect(ada["token"])
    try:

        async def broken(*_args: Any) -> None:
            raise RuntimeError("boom")

        monkeypatch.setattr(server.services.presence, "heartbeat", broken)
        ack = await client.call("heartbeat", {})
        assert ack == {"error": {"code": "internal_error", "message": "internal error"}}
        crashed = [r for r in caplog.records if r.getMessage() == "handler crashed"]
        assert len(crashed) == 1 and crashed[0].exc_info is not None
        assert crashed[0].user_id == ada["id"] and crashed[0].sid  # type: ignore[attr-defined]
        assert crashed[0].event == "heartbeat"  # type: ignore[attr-defined]
        monkeypatch.undo()
        assert client.sio.connected
        assert await client.call("heartbeat", {}) is None
    finally:
        await client.close()


async def test_unknown_event_gets_an_error_ack(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    client = await RecordingClient(server.url).connect(ada["token"])
    try:
        ack = await client.call("no-such-event", {"x": 1})
        assert ack["error"]["code"] == "invalid_payload" and "no-such-event" in ack["error"]["message"]
        assert await client.call("heartbeat", {}) is None
    finally:
        await client.close()


# structured logs


async def test_logs_carry_user_and_session_ids(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chatwire")
    ada = await server.signup("Ada")
    client = await RecordingClient(server.url).connect(ada["token"])
    sid = client.sio.get_sid()
    await client.call("events:channel", {"channel_id": "nope", "data": {"type": "last_read_at"}})
    await client.close()
    await wait_until(lambda: any(r.getMessage() == "disconnect" for r in caplog.records))
    bad = RecordingClient(server.url)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await bad.connect("not-a-token")

    def one(message: str) -> logging.LogRecord:
        found = [r for r in caplog.records if r.getMessage() == message and r.name == "chatwire.socket"]
        assert len(found) == 1, (message, found)
        return found[0]

    engine_sid = None
    for message in ("connect", "join", "event rejected", "disconnect"):
        record = one(message)
        assert record.user_id == ada["id"], message  # type: ignore[attr-defined]
        engine_sid = engine_sid or record.sid  # type: ignore[attr-defined]
        assert record.sid == engine_sid, message  # type: ignore[attr-defined]
        line = JsonFormatter().format(record)
        assert "\n" not in line and f'"user_id": "{ada["id"]}"' in line and f'"sid": "{engine_sid}"' in line
    assert sid is not None
    rejected = one("event rejected")
    assert rejected.code == "not_found" and rejected.event == "events:channel"  # type: ignore[attr-defined]
    refused = one("connect refused")
    assert refused.sid and refused.reason == "invalid token"  # type: ignore[attr-defined]


# room membership follows channel membership at once


async def test_added_member_enters_the_room_and_deleted_channel_empties_it(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    cid = await group(server, ada)
    b = await RecordingClient(server.url).connect(bob["token"])
    a = await RecordingClient(server.url).connect(ada["token"])
    try:
        assert f"channel:{cid}" not in await rooms(server, b)
        async with server.http(ada["token"]) as http:
            r = await http.post(f"/api/v1/channels/{cid}/update/members/add", json={"user_ids": [bob["id"]]})
            assert r.status_code == 200
        created = await b.wait_for("events:channel", lambda p: p["data"]["type"] == "channel:created")
        assert created["channel_id"] == cid
        assert f"channel:{cid}" in await rooms(server, b)
        async with server.http(ada["token"]) as http:
            await http.post(f"/api/v1/channels/{cid}/messages/post", json={"content": "welcome"})
        got = await b.wait_for("events:channel", lambda p: p["data"]["type"] == "message")
        assert got["data"]["data"]["content"] == "welcome"

        async with server.http(ada["token"]) as http:
            assert (await http.delete(f"/api/v1/channels/{cid}/delete")).status_code == 200
        assert await server.services.broker.room_sids(f"channel:{cid}") == []
        assert f"channel:{cid}" not in await rooms(server, a)
        refused = await b.call("events:channel", {"channel_id": cid, "data": {"type": "last_read_at"}})
        assert refused["error"]["code"] == "not_found"
    finally:
        await a.close()
        await b.close()
