"""The foundation end to end in one process: REST + Socket.IO with python-socketio clients."""

from __future__ import annotations

from typing import Any

import pytest
import socketio

from tests.conftest import RunningServer
from tests.sio import RecordingClient


def channel_event(kind: str, channel_id: str) -> Any:
    return lambda p: p["data"]["type"] == kind and p["channel_id"] == channel_id


async def test_first_user_is_admin_and_signin_works(server: RunningServer) -> None:
    admin = await server.signup("Ada")
    bob = await server.signup("Bob")
    assert admin["role"] == "admin" and bob["role"] == "user"
    async with server.http() as http:
        r = await http.post("/api/v1/auths/signin", json={"email": bob["email"], "password": "pw-xxxxxxxx"})
        assert r.status_code == 200 and r.json()["id"] == bob["id"]
        bad = await http.post("/api/v1/auths/signin", json={"email": bob["email"], "password": "nope"})
        assert bad.status_code == 401 and bad.json()["code"] == "unauthorized"


async def test_invalid_token_is_refused_at_connect(server: RunningServer) -> None:
    client = RecordingClient(server.url)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect("not-a-token")
    assert client.connect_error == {"message": "invalid token", "data": {"code": "unauthorized"}}


async def test_anonymous_connection_can_only_user_join(server: RunningServer) -> None:
    user = await server.signup("Ada")
    client = await RecordingClient(server.url).connect(None, join=False)
    try:
        denied = await client.call("heartbeat", {})
        assert denied["error"]["code"] == "unauthorized"
        ack = await client.call("user-join", {"auth": {"token": user["token"]}})
        assert ack == {"id": user["id"], "name": "Ada"}
        assert await client.call("heartbeat", {}) is None
    finally:
        await client.close()


async def test_token_of_another_user_cannot_join_their_rooms(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    client = await RecordingClient(server.url).connect(ada["token"])
    try:
        ack = await client.call("user-join", {"auth": {"token": bob["token"]}})
        assert ack["error"]["code"] == "user_mismatch"
        sid = client.sio.get_sid()
        rooms = await server.services.broker.rooms_of(sid)
        assert f"user:{bob['id']}" not in rooms and f"user:{ada['id']}" in rooms
    finally:
        await client.close()


async def test_channel_flow_and_non_member_refused(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    eve = await server.signup("Eve")
    a = await RecordingClient(server.url).connect(ada["token"])
    b = await RecordingClient(server.url).connect(bob["token"])
    e = await RecordingClient(server.url).connect(eve["token"])
    try:
        async with server.http(ada["token"]) as http:
            r = await http.post(
                "/api/v1/channels/create", json={"name": "team", "type": "group", "user_ids": [bob["id"]]}
            )
            assert r.status_code == 200, r.text
            channel = r.json()
        cid = channel["id"]
        created = await b.wait_for("events:channel", channel_event("channel:created", cid))
        assert created["user"]["id"] == ada["id"]

        async with server.http(bob["token"]) as http:
            r = await http.post(
                f"/api/v1/channels/{cid}/messages/post", json={"content": "hi", "temp_id": "t1"}
            )
            assert r.status_code == 200
            msg = r.json()
        got = await a.wait_for("events:channel", channel_event("message", cid))
        assert got["data"]["data"]["content"] == "hi" and got["data"]["data"]["temp_id"] == "t1"
        assert got["message_id"] == msg["id"] and got["user"] == {
            "id": bob["id"],
            "name": "Bob",
            "role": "user",
        }

        ack = await b.call(
            "events:channel", {"channel_id": cid, "data": {"type": "typing", "data": {"typing": True}}}
        )
        assert ack == {"ok": True}
        typing = await a.wait_for("events:channel", channel_event("typing", cid))
        assert typing["data"]["data"] == {"typing": True} and typing["user"]["id"] == bob["id"]

        refused = await e.call(
            "events:channel", {"channel_id": cid, "data": {"type": "typing", "data": {"typing": True}}}
        )
        assert refused["error"]["code"] == "not_member"
        await e.expect_none("events:channel", channel_event("typing", cid))
    finally:
        for c in (a, b, e):
            await c.close()


async def test_removed_member_leaves_room_at_once(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    b = await RecordingClient(server.url).connect(bob["token"])
    try:
        async with server.http(ada["token"]) as http:
            cid = (
                await http.post(
                    "/api/v1/channels/create", json={"name": "x", "type": "group", "user_ids": [bob["id"]]}
                )
            ).json()["id"]
            await b.wait_for("events:channel", channel_event("channel:created", cid))
            r = await http.post(
                f"/api/v1/channels/{cid}/update/members/remove", json={"user_ids": [bob["id"]]}
            )
            assert r.status_code == 200 and bob["id"] not in r.json()["user_ids"]
            await http.post(f"/api/v1/channels/{cid}/messages/post", json={"content": "secret"})
        await b.expect_none("events:channel", channel_event("message", cid))
        assert f"channel:{cid}" not in await server.services.broker.rooms_of(b.sio.get_sid())
    finally:
        await b.close()


async def test_typing_needs_the_room_or_membership_and_a_removed_member_is_refused_at_once(
    server: RunningServer,
) -> None:
    """Typing from a session in the channel room is relayed without a database read; once the member is removed
    (the session leaves the room), the next typing event takes the membership check and is refused."""
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    a = await RecordingClient(server.url).connect(ada["token"])
    b = await RecordingClient(server.url).connect(bob["token"])
    typing = {"type": "typing", "data": {"typing": True}}
    try:
        async with server.http(ada["token"]) as http:
            cid = (
                await http.post(
                    "/api/v1/channels/create", json={"name": "x", "type": "group", "user_ids": [bob["id"]]}
                )
            ).json()["id"]
            await b.wait_for("events:channel", channel_event("channel:created", cid))
            assert await b.call("events:channel", {"channel_id": cid, "data": typing}) == {"ok": True}
            await a.wait_for("events:channel", channel_event("typing", cid))
            await http.post(f"/api/v1/channels/{cid}/update/members/remove", json={"user_ids": [bob["id"]]})
        refused = await b.call("events:channel", {"channel_id": cid, "data": typing})
        assert refused["error"]["code"] == "not_member"
    finally:
        await a.close()
        await b.close()
