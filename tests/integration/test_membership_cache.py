"""The connect path's channel-id cache (MembershipCache in services/auth_cache.py): a warm user-join reads no
membership row, and every membership change (channel created or deleted, members added or removed) reaches the
next join at once, on this process and on another process of a fleet."""

from __future__ import annotations

import asyncio
from typing import Any

from chatwire.services.auth_cache import MembershipCache
from tests.conftest import RunningServer
from tests.integration.test_auth_cache import statements, two_processes
from tests.sio import RecordingClient


async def channel_rooms(server: RunningServer, token: str) -> set[str]:
    """The channel rooms a fresh tab of the token's user enters on `server` (connect + user-join)."""
    client = await RecordingClient(server.url).connect(token)
    try:
        rooms = await server.services.broker.rooms_of(client.sio.get_sid())
    finally:
        await client.close()
    return {r for r in rooms if r.startswith("channel:")}


async def create_group(server: RunningServer, token: str, user_ids: list[str]) -> str:
    async with server.http(token) as http:
        r = await http.post(
            "/api/v1/channels/create", json={"name": "g", "type": "group", "user_ids": user_ids}
        )
        assert r.status_code == 200, r.text
        return str(r.json()["id"])


async def change_members(
    server: RunningServer, token: str, channel_id: str, verb: str, ids: list[str]
) -> None:
    async with server.http(token) as http:
        r = await http.post(f"/api/v1/channels/{channel_id}/update/members/{verb}", json={"user_ids": ids})
        assert r.status_code == 200, r.text


async def test_warm_join_reads_no_membership_row(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    cid = await create_group(server, ada["token"], [bob["id"]])
    assert await channel_rooms(server, bob["token"]) == {f"channel:{cid}"}
    with statements(server, "from channel_members") as reads:
        for _ in range(3):
            assert await channel_rooms(server, bob["token"]) == {f"channel:{cid}"}
    assert reads == []


async def test_every_membership_change_reaches_the_next_join(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    carol = await server.signup("Carol")
    # all three warm, with no channel yet
    for who in (ada, bob, carol):
        assert await channel_rooms(server, who["token"]) == set()
    cid = await create_group(server, ada["token"], [bob["id"]])
    room = f"channel:{cid}"
    assert await channel_rooms(server, ada["token"]) == {room}  # created
    assert await channel_rooms(server, bob["token"]) == {room}
    assert await channel_rooms(server, carol["token"]) == set()
    await change_members(server, ada["token"], cid, "add", [carol["id"]])
    assert await channel_rooms(server, carol["token"]) == {room}  # added
    await change_members(server, ada["token"], cid, "remove", [bob["id"]])
    assert await channel_rooms(server, bob["token"]) == set()  # removed
    async with server.http(ada["token"]) as http:
        assert (await http.delete(f"/api/v1/channels/{cid}/delete")).status_code == 200
    assert await channel_rooms(server, carol["token"]) == set()  # deleted
    assert await channel_rooms(server, ada["token"]) == set()


async def test_a_read_overtaken_by_a_change_stores_nothing() -> None:
    cache = MembershipCache()
    before = cache.generation("u")
    cache.forget("u")  # a membership write committed while the read ran
    cache.put("u", ("old",), before)
    assert cache.get("u") is None
    cache.put("u", ("new",), cache.generation("u"))
    assert cache.get("u") == ("new",)
    during = cache.generation("u")
    cache.clear()  # a bus gap while a read runs: its value is not stored either
    cache.put("u", ("stale",), during)
    assert cache.get("u") is None


async def test_fleet_membership_change_on_a_reaches_b(tmp_path: Any) -> None:
    async with two_processes(tmp_path) as (a, b):
        ada = await a.signup("Ada")
        bob = await a.signup("Bob")
        assert await channel_rooms(b, bob["token"]) == set()  # B's cache is warm: no channel
        assert b.services.channels.memberships.get(bob["id"]) == ()
        cid = await create_group(a, ada["token"], [bob["id"]])
        for _ in range(250):  # the notice travels over the bus (bounded wait, not a sleep-and-hope)
            if b.services.channels.memberships.get(bob["id"]) is None:
                break
            await asyncio.sleep(0.02)
        assert await channel_rooms(b, bob["token"]) == {f"channel:{cid}"}
        await change_members(a, ada["token"], cid, "remove", [bob["id"]])
        for _ in range(250):
            if b.services.channels.memberships.get(bob["id"]) is None:
                break
            await asyncio.sleep(0.02)
        assert await channel_rooms(b, bob["token"]) == set()


async def test_fleet_notice_for_everyone_clears_every_entry(server: RunningServer) -> None:
    """A change to more users than a notice names (a standard channel for all) drops the whole cache."""
    auth = server.services.auth
    auth.memberships.put("x", ("c1",), auth.memberships.generation("x"))
    auth.memberships.put("y", ("c2",), auth.memberships.generation("y"))
    auth.fleet_user_changed({"memberships": ["x"]})
    assert auth.memberships.get("x") is None and auth.memberships.get("y") == ("c2",)
    auth.fleet_user_changed({"memberships": "all"})
    assert auth.memberships.get("y") is None


async def test_cold_misses_of_one_turn_are_read_in_one_query(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    others = [await server.signup(f"U{i}") for i in range(5)]
    cid = await create_group(server, ada["token"], [u["id"] for u in others])
    channels = server.services.channels
    for u in [ada, *others]:
        channels.memberships.forget(u["id"])
    lonely = await server.signup("Lonely")
    ids = [u["id"] for u in [ada, *others, lonely]] * 4  # four tabs of each user join at once
    with statements(server, "from channel_members") as reads:
        got = await asyncio.gather(*(channels.channel_ids(uid) for uid in ids))
    assert len(reads) == 1
    assert got == ([(cid,)] * 6 + [()]) * 4
