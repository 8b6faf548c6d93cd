"""Presence and history for any client, on one process: who is in a channel or a note now, live join/leave
events, and a channel's (or a user's) events by offset, paged, with recovery's epoch rule."""

from __future__ import annotations

from typing import Any

import pytest

from chatwire.client.rest import ChatwireHTTP
from chatwire.client.server import ServerApiError, ServerClient
from tests.conftest import RunningServer
from tests.sio import RecordingClient


async def group(server: RunningServer, owner: dict[str, Any], *members: dict[str, Any]) -> str:
    async with server.http(owner["token"]) as http:
        r = await http.post(
            "/api/v1/channels/create",
            json={"name": "g", "type": "group", "user_ids": [m["id"] for m in members]},
        )
        r.raise_for_status()
        return str(r.json()["id"])


async def test_channel_presence_and_live_join_and_leave(server: RunningServer) -> None:
    ada, bob, eve = await server.signup("Ada"), await server.signup("Bob"), await server.signup("Eve")
    channel = await group(server, ada, bob)
    a = await RecordingClient(server.url).connect(ada["token"])
    try:
        async with ChatwireHTTP(server.url, ada["token"]) as http:
            body = await http.channel_presence(channel)
            assert body["room"] == f"channel:{channel}"
            assert [(u["id"], u["sessions"]) for u in body["users"]] == [(ada["id"], 1)]
            b1 = await RecordingClient(server.url).connect(bob["token"])
            joined = await a.wait_for("events:presence", lambda e: e["user"]["id"] == bob["id"])
            assert joined == {
                "room": f"channel:{channel}",
                "type": "join",
                "user": {"id": bob["id"], "name": "Bob"},
            }
            b2 = await RecordingClient(server.url).connect(bob["token"])  # a second tab: no second join
            assert {u["id"]: u["sessions"] for u in (await http.channel_presence(channel))["users"]} == {
                ada["id"]: 1,
                bob["id"]: 2,
            }
            await b1.close()
            await a.expect_none("events:presence", lambda e: e["type"] == "leave", wait=0.3)
            await b2.close()
            left = await a.wait_for("events:presence", lambda e: e["type"] == "leave")
            assert left["user"]["id"] == bob["id"]
            # Bob's two tabs made one join and one leave. (Ada's own join may reach her too, or not: it is sent
            # while her user-join enters the channel room.)
            bobs = [e["type"] for e in a.received["events:presence"] if e["user"]["id"] == bob["id"]]
            assert bobs == ["join", "leave"]
            assert [u["id"] for u in (await http.channel_presence(channel))["users"]] == [ada["id"]]
        e = await RecordingClient(server.url).connect(eve["token"])  # not a member: no events, no presence
        await e.close()
        await a.expect_none("events:presence", lambda ev: ev["user"]["id"] == eve["id"], wait=0.2)
        async with server.http(eve["token"]) as http:
            r = await http.get(f"/api/v1/channels/{channel}/presence")
            assert r.status_code == 403 and r.json()["code"] == "not_member"
    finally:
        await a.close()


async def test_note_presence_lists_the_documents_editors(server: RunningServer) -> None:
    ada, bob = await server.signup("Ada"), await server.signup("Bob")
    async with server.http(ada["token"]) as http:
        note = (
            await http.post(
                "/api/v1/notes/create",
                json={"title": "N", "data": {}, "access_control": {"read": {"user_ids": [bob["id"]]}}},
            )
        ).json()
    a = await RecordingClient(server.url).connect(ada["token"])
    try:
        async with ChatwireHTTP(server.url, bob["token"]) as http:
            assert (await http.note_presence(note["id"]))["users"] == []
            ack = await a.call("ydoc:document:join", {"document_id": f"note:{note['id']}"})
            assert "error" not in ack
            body = await http.note_presence(note["id"])
            assert [(u["id"], u["name"]) for u in body["users"]] == [(ada["id"], "Ada")]
        _record, key = await server.services.api_keys.create("p", ["presence"])
        async with ServerClient(server.url, key) as api:
            assert [u["id"] for u in (await api.room_presence(f"note:{note['id']}"))["users"]] == [ada["id"]]
            with pytest.raises(ServerApiError) as info:
                await api.room_presence("user:x")
            assert info.value.code == "invalid_payload"
            with pytest.raises(ServerApiError) as info:
                await api.room_presence("note:nope")
            assert info.value.status == 404
    finally:
        await a.close()
    eve = await server.signup("Eve")
    async with server.http(eve["token"]) as http:
        assert (await http.get(f"/api/v1/notes/{note['id']}/presence")).status_code in (403, 404)


async def test_channel_history_by_offset_paged_with_the_epoch_rule(server: RunningServer) -> None:
    ada, eve = await server.signup("Ada"), await server.signup("Eve")
    channel = await group(server, ada)
    async with ChatwireHTTP(server.url, ada["token"]) as http:
        start = await http.channel_events(channel)
        assert start["events"] == [] and start["gone"] is False and start["next"] == start["head"]
        sent = []
        async with server.http(ada["token"]) as rest:
            for i in range(5):
                r = await rest.post(f"/api/v1/channels/{channel}/messages/post", json={"content": f"m{i}"})
                sent.append(r.json()["id"])
        page = await http.channel_events(channel, start["head"], limit=2)
        assert [e["data"]["message_id"] for e in page["events"]] == sent[:2] and page["more"] is True
        assert page["events"][0]["event"] == "events:channel"
        page2 = await http.channel_events(channel, page["next"], limit=2)
        assert [e["data"]["message_id"] for e in page2["events"]] == sent[2:4]
        everything = await http.channel_history(channel, start["head"], page=2)
        assert everything is not None
        assert [e["data"]["message_id"] for e in everything] == sent
        offsets = [e["offset"] for e in everything]
        assert offsets == sorted(offsets, key=lambda o: int(o.rsplit("-", 1)[1]))
        assert await http.channel_history(channel, "another-epoch-1") is None
        gone = await http.channel_events(channel, "another-epoch-1")
        assert gone["gone"] is True and gone["head"] == page2["head"]
        async with server.http(ada["token"]) as rest:
            r = await rest.get(f"/api/v1/channels/{channel}/events", params={"since": "not an offset"})
            assert r.status_code == 400 and r.json()["code"] == "invalid_payload"
    async with server.http(eve["token"]) as http:
        r = await http.get(f"/api/v1/channels/{channel}/events", params={"since": start["head"]})
        assert r.status_code == 403
    _record, key = await server.services.api_keys.create("h", ["publish"])
    async with ServerClient(server.url, key) as api:
        room = await api.room_events(f"channel:{channel}", start["head"], limit=10)
        assert [e["data"]["message_id"] for e in room["events"]] == sent
        assert (await api.room_events(f"user:{ada['id']}", start["head"]))["events"] == []
        origin = start["head"].rsplit("-", 1)[0] + "-0"  # the epoch's beginning: nothing trimmed yet
        user_room = await api.room_events(f"user:{ada['id']}", origin)
        kinds = [(e["event"], e["data"]["data"]["type"]) for e in user_room["events"]]
        assert kinds == [("events:channel", "channel:created")]
        with pytest.raises(ServerApiError) as info:
            await api.room_events(f"note:{channel}")
        assert info.value.code == "invalid_payload"
