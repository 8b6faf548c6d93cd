"""The user directory, channel member lists and live channel presence: in one process, and across a fleet."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.conftest import REDIS_URL, RunningServer
from tests.integration.test_fleet import PRESENCE_TTL, fleet_of, require_redis
from tests.procs import json_of
from tests.sio import RecordingClient


def presence(user_id: str, online: bool, channel_id: str | None = None) -> Any:
    return lambda p: (
        p["data"]["type"] == "presence"
        and p["data"]["data"] == {"user_id": user_id, "online": online}
        and (channel_id is None or p["channel_id"] == channel_id)
    )


async def test_directory_shows_names_to_users_and_emails_to_admins(server: RunningServer) -> None:
    admin = await server.signup("Ada Admin", "ada@example.com")
    bob = await server.signup("Bob Builder", "builder@example.com")
    await server.signup("Bobby Tables", "tables@example.com")
    async with server.http(bob["token"]) as http:
        found = await json_of(await http.get("/api/v1/users/search", params={"query": "bob"}))
        assert found["total"] == 2
        by_name = {u["name"]: u for u in found["users"]}
        assert by_name["Bob Builder"]["email"] == bob["email"]  # oneself: with email
        assert "email" not in by_name["Bobby Tables"] and "role" not in by_name["Bobby Tables"]
        assert set(by_name["Bobby Tables"]) == {"id", "name", "is_active"}
        # A non-admin cannot find people by their email address.
        by_email = await json_of(await http.get("/api/v1/users/search", params={"query": admin["email"]}))
        assert by_email == {"users": [], "total": 0}
        info = await json_of(await http.get(f"/api/v1/users/{admin['id']}/info"))
        assert info == {"id": admin["id"], "name": "Ada Admin", "is_active": False}
        missing = await http.get("/api/v1/users/nope/info")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"
        bad = await http.get("/api/v1/users/search", params={"page": 0})
        assert bad.status_code == 422 and bad.json()["code"] == "invalid_payload"
    async with server.http(admin["token"]) as http:
        found = await json_of(await http.get("/api/v1/users/search", params={"query": "builder@"}))
        assert [u["email"] for u in found["users"]] == [bob["email"]]
    async with server.http() as http:
        anon = await http.get("/api/v1/users/search")
        assert anon.status_code == 401 and anon.json()["code"] == "unauthorized"


async def test_members_list_and_presence_events(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    eve = await server.signup("Eve")
    async with server.http(ada["token"]) as http:
        channel = await json_of(
            await http.post(
                "/api/v1/channels/create", json={"name": "team", "type": "group", "user_ids": [bob["id"]]}
            )
        )
    cid = channel["id"]
    a = await RecordingClient(server.url).connect(ada["token"])
    e = await RecordingClient(server.url).connect(eve["token"])
    try:
        async with server.http(ada["token"]) as http:
            members = await json_of(await http.get(f"/api/v1/channels/{cid}/members"))
        assert members["total"] == 2
        assert [(u["name"], u["is_active"]) for u in members["users"]] == [("Ada", True), ("Bob", False)]
        assert all("email" not in u for u in members["users"])
        async with server.http(eve["token"]) as http:
            refused = await http.get(f"/api/v1/channels/{cid}/members")
            assert refused.status_code == 403 and refused.json()["code"] == "not_member"

        # Bob comes online with two tabs: one "online" (the first tab), and "offline" only when both are gone.
        b1 = await RecordingClient(server.url).connect(bob["token"])
        await a.wait_for("events:channel", presence(bob["id"], True, cid))
        b2 = await RecordingClient(server.url).connect(bob["token"])
        async with server.http(ada["token"]) as http:
            members = await json_of(await http.get(f"/api/v1/channels/{cid}/members"))
        assert [u["is_active"] for u in members["users"]] == [True, True]
        await b1.close()
        await a.expect_none("events:channel", presence(bob["id"], False), wait=0.4)
        await b2.close()
        await a.wait_for("events:channel", presence(bob["id"], False, cid))
        assert len([p for p in a.received["events:channel"] if presence(bob["id"], True)(p)]) == 1
        # Not a member: Eve hears nothing of Bob.
        await e.expect_none("events:channel", presence(bob["id"], True), wait=0.1)
    finally:
        await a.close()
        await e.close()


async def test_presence_reaches_every_process_and_a_killed_process_goes_offline(tmp_path: Path) -> None:
    await require_redis()
    async with fleet_of(2, tmp_path, REDIS_URL) as fleet:
        ada, bob = await fleet.signup("Ada"), await fleet.signup("Bob")
        async with fleet.servers[0].http(ada["token"]) as http:
            channel = await json_of(
                await http.post(
                    "/api/v1/channels/create", json={"name": "ops", "type": "group", "user_ids": [bob["id"]]}
                )
            )
        a = await fleet.client(0, ada["token"])
        try:
            b = await fleet.client(1, bob["token"])
            await a.wait_for("events:channel", presence(bob["id"], True, channel["id"]))
            async with fleet.servers[0].http(ada["token"]) as http:
                members = await json_of(await http.get(f"/api/v1/channels/{channel['id']}/members"))
            assert {u["name"]: u["is_active"] for u in members["users"]} == {"Ada": True, "Bob": True}
            # Bob's process dies without a goodbye: his session expires by TTL and a live process says so.
            fleet.servers[1].kill()
            await a.wait_for(
                "events:channel", presence(bob["id"], False, channel["id"]), timeout=PRESENCE_TTL * 6
            )
            async with fleet.servers[0].http(ada["token"]) as http:
                members = await json_of(await http.get(f"/api/v1/channels/{channel['id']}/members"))
            assert {u["name"]: u["is_active"] for u in members["users"]} == {"Ada": True, "Bob": False}
            del b
        finally:
            await a.close()
        await asyncio.sleep(0)
