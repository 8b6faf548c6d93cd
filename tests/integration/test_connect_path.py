"""The connect path under a storm: many tabs of a few users connecting and leaving at once, on one process and
across a fleet. Presence is announced once per user transition (first session in, last session out), never per
tab; a `user-join` with the token its connect verified does not register the session a second time."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from chatwire.backends.sessions import SessionInfo
from tests.conftest import REDIS_URL, RunningServer
from tests.integration.test_fleet import fleet_of, require_redis
from tests.procs import json_of
from tests.sio import RecordingClient

USERS = 6
TABS = 8


def presence_counts(watcher: RecordingClient, user_ids: set[str]) -> tuple[Counter[Any], Counter[Any]]:
    """What the watcher heard of these users: (channel presence (id, online), room presence (id, join|leave))."""
    channel = Counter(
        (p["data"]["data"]["user_id"], p["data"]["data"]["online"])
        for p in watcher.received["events:channel"]
        if p["data"]["type"] == "presence" and p["data"]["data"]["user_id"] in user_ids
    )
    room = Counter(
        (p["user"]["id"], p["type"])
        for p in watcher.received["events:presence"]
        if p["user"]["id"] in user_ids
    )
    return channel, room


async def storm(urls: list[str], watcher_url: str, signup: Any, post: Any) -> None:
    """USERS x TABS tabs (spread over `urls`) connect at once and leave at once; a member of their channel counts
    the presence events it gets, with a channel message after everything as the barrier."""
    watcher = await signup("Watcher")
    users = [await signup(f"U{i}") for i in range(USERS)]
    ids = {u["id"] for u in users}
    channel = await post(
        watcher["token"], "/api/v1/channels/create", {"name": "all", "type": "group", "user_ids": sorted(ids)}
    )
    w = await RecordingClient(watcher_url).connect(watcher["token"])
    try:
        tabs = [(RecordingClient(urls[i % len(urls)]), u["token"]) for i, u in enumerate(users * TABS)]
        await asyncio.gather(*(tab.connect(token) for tab, token in tabs))
        for uid in ids:
            await w.wait_for(
                "events:presence", lambda p, uid=uid: p["user"]["id"] == uid and p["type"] == "join"
            )
        await asyncio.gather(*(tab.close() for tab, _ in tabs))
        for uid in ids:
            await w.wait_for(
                "events:presence", lambda p, uid=uid: p["user"]["id"] == uid and p["type"] == "leave"
            )
            await w.wait_for(
                "events:channel",
                lambda p, uid=uid: (
                    p["data"]["type"] == "presence" and p["data"]["data"] == {"user_id": uid, "online": False}
                ),
            )
        # Whatever presence was sent before this message reaches the watcher before it (one room, one order).
        marker = uuid.uuid4().hex
        await post(watcher["token"], f"/api/v1/channels/{channel['id']}/messages/post", {"content": marker})
        await w.wait_for(
            "events:channel",
            lambda p: p["data"]["type"] == "message" and p["data"]["data"].get("content") == marker,
        )
        channel_counts, room_counts = presence_counts(w, ids)
        assert channel_counts == Counter({(uid, online): 1 for uid in ids for online in (True, False)})
        assert room_counts == Counter({(uid, kind): 1 for uid in ids for kind in ("join", "leave")})
    finally:
        await w.close()


async def test_presence_is_announced_once_per_user_in_a_connect_storm(server: RunningServer) -> None:
    async def post(token: str, path: str, body: dict[str, Any]) -> Any:
        async with server.http(token) as http:
            return await json_of(await http.post(path, json=body))

    await storm([server.url], server.url, server.signup, post)


@pytest.mark.e2e
async def test_presence_is_announced_once_per_user_across_a_fleet(tmp_path: Path) -> None:
    await require_redis()
    async with fleet_of(2, tmp_path, REDIS_URL) as fleet:

        async def post(token: str, path: str, body: dict[str, Any]) -> Any:
            async with fleet.servers[0].http(token) as http:
                return await json_of(await http.post(path, json=body))

        await storm([s.url for s in fleet.servers], fleet.servers[0].url, fleet.signup, post)


async def test_user_join_with_the_connect_token_does_not_register_again(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ada = await server.signup("Ada")
    store = server.services.sessions
    added: list[SessionInfo] = []
    add = store.add

    async def counting_add(info: SessionInfo) -> bool:
        added.append(info)
        return await add(info)

    monkeypatch.setattr(store, "add", counting_add)
    tab = await RecordingClient(server.url).connect(ada["token"])  # connect with the token, then user-join
    try:
        assert [i.sid for i in added] == [tab.sio.get_sid()]
    finally:
        await tab.close()
    # A session that connected without a token registers at its user-join, once.
    anon = RecordingClient(server.url)
    await anon.sio.connect(
        server.url, socketio_path="ws/socket.io", transports=["websocket"], wait_timeout=10
    )
    try:
        ack = await anon.call("user-join", {"auth": {"token": ada["token"]}})
        assert ack["id"] == ada["id"]
        ack = await anon.call("user-join", {"auth": {"token": ada["token"]}})
        assert ack["id"] == ada["id"]
        assert [i.sid for i in added][1:] == [anon.sio.get_sid()]
    finally:
        await anon.close()
