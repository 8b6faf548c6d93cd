"""An admin edits a user (Open WebUI's `POST /api/v1/users/{id}/update`): the fields given change, a new role or
password ends the user's live sessions at once (the tabs come back with what the new role allows), and every
refusal leaves the database as it was."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import socketio

from tests.conftest import RunningServer
from tests.dbsnap import snapshot
from tests.procs import json_of
from tests.sio import RecordingClient


async def _update(server: RunningServer, actor: dict[str, Any], user_id: str, body: Any) -> Any:
    async with server.http(actor["token"]) as http:
        return await http.post(f"/api/v1/users/{user_id}/update", json=body)


async def _refused(
    server: RunningServer, actor: dict[str, Any], user_id: str, body: Any, status: int, code: str
) -> None:
    before = await snapshot(server.services.db)
    r = await _update(server, actor, user_id, body)
    assert r.status_code == status, r.text
    assert r.json()["code"] == code, r.text
    assert await snapshot(server.services.db) == before


async def _disconnected(client: RecordingClient, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while client.sio.connected:
            await asyncio.sleep(0.02)


async def test_a_user_made_pending_loses_the_channel_at_once(server: RunningServer) -> None:
    ada = await server.signup("Ada")  # the first account: the primary admin
    bob = await server.signup("Bob")
    async with server.http(ada["token"]) as http:
        channel = await json_of(
            await http.post(
                "/api/v1/channels/create", json={"name": "team", "type": "group", "user_ids": [bob["id"]]}
            )
        )
    tab = await RecordingClient(server.url).connect(bob["token"])
    again = RecordingClient(server.url)
    try:
        r = await _update(server, ada, bob["id"], {"role": "pending", "password": ""})
        assert r.status_code == 200, r.text
        assert r.json()["role"] == "pending" and r.json()["name"] == "Bob"
        await _disconnected(tab)
        # The tab comes back: the socket accepts the token, but a pending account gets no channel room.
        await again.connect(bob["token"], join=False)
        ack = await again.call("user-join", {"auth": {"token": bob["token"]}})
        assert "error" not in ack, ack
        async with server.http(ada["token"]) as http:
            r = await http.post(f"/api/v1/channels/{channel['id']}/messages/post", json={"content": "hi all"})
            assert r.status_code == 200, r.text
        await again.expect_none("events:channel", lambda p: p["data"]["type"] == "message", wait=0.5)
        async with server.http(bob["token"]) as http:
            refused = await http.get("/api/v1/channels/")
        assert refused.status_code == 403
    finally:
        await tab.close()
        await again.close()


async def test_a_rename_keeps_the_sessions_and_a_new_password_ends_them(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    tab = await RecordingClient(server.url).connect(bob["token"])
    try:
        r = await _update(
            server, ada, bob["id"], {"name": "Robert", "profile_image_url": "https://example.com/b.png"}
        )
        assert r.status_code == 200 and r.json()["name"] == "Robert", r.text
        assert r.json()["profile_image_url"] == "https://example.com/b.png"
        await asyncio.sleep(0.3)
        assert tab.sio.connected
        async with server.http(bob["token"]) as http:
            assert (await json_of(await http.get("/api/v1/auths/"))).get("name") == "Robert"

        r = await _update(server, ada, bob["id"], {"password": "a-new-password"})
        assert r.status_code == 200, r.text
        await _disconnected(tab)
        async with server.http() as http:
            old = await http.post(
                "/api/v1/auths/signin", json={"email": bob["email"], "password": "pw-" + "x" * 8}
            )
            new = await http.post(
                "/api/v1/auths/signin", json={"email": bob["email"], "password": "a-new-password"}
            )
        assert old.status_code == 401 and new.status_code == 200
        # Whoever held the old password is signed out: the token from before is refused, the new one works.
        async with server.http(bob["token"]) as http:
            assert (await http.get("/api/v1/auths/")).status_code == 401
        async with server.http(new.json()["token"]) as http:
            assert (await http.get("/api/v1/auths/")).status_code == 200
    finally:
        await tab.close()


async def test_refusals_change_nothing(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    eve = await server.signup("Eve")
    assert (await _update(server, ada, eve["id"], {"role": "admin"})).status_code == 200
    eve_admin = eve  # the same token: the role is read from the row
    await _refused(server, bob, eve["id"], {"name": "x"}, 403, "forbidden")  # not an admin
    await _refused(server, ada, "no-such-user", {"name": "x"}, 404, "not_found")
    # The primary admin: edited only by itself, and it stays an admin.
    await _refused(server, eve_admin, ada["id"], {"name": "Mallory"}, 403, "forbidden")
    await _refused(server, ada, ada["id"], {"role": "user"}, 403, "forbidden")
    await _refused(server, ada, bob["id"], {"email": eve["email"].upper()}, 409, "conflict")
    await _refused(server, ada, bob["id"], {"role": "root"}, 422, "invalid_payload")
    await _refused(
        server, ada, bob["id"], {"profile_image_url": "javascript:alert(1)"}, 422, "invalid_payload"
    )
    await _refused(server, ada, bob["id"], {"name": "   "}, 422, "invalid_payload")
    # The primary admin may edit itself.
    r = await _update(server, ada, ada["id"], {"name": "Ada L.", "role": "admin"})
    assert r.status_code == 200 and r.json()["name"] == "Ada L." and r.json()["role"] == "admin"


async def test_sign_out_all_devices_refuses_every_earlier_token_and_ends_the_sessions(
    server: RunningServer,
) -> None:
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    async with server.http() as http:
        laptop = await json_of(
            await http.post("/api/v1/auths/signin", json={"email": bob["email"], "password": "pw-" + "x" * 8})
        )
    tab = await RecordingClient(server.url).connect(bob["token"])
    try:
        async with server.http(ada["token"]) as http:
            assert (await json_of(await http.get(f"/api/v1/users/{bob['id']}/groups"))) == []
            r = await http.post(f"/api/v1/users/{bob['id']}/sessions/revoke")
            assert r.status_code == 200 and r.json() is True, r.text
        await _disconnected(tab)
        for token in (bob["token"], laptop["token"]):
            async with server.http(token) as http:
                assert (await http.get("/api/v1/auths/")).status_code == 401
        refused = RecordingClient(server.url)
        try:
            with pytest.raises(socketio.exceptions.ConnectionError):
                await refused.connect(bob["token"], join=False)
            assert "revoked" in str(refused.connect_error), refused.connect_error
        finally:
            await refused.close()
        # Signing in again right away works (the cut-off is to the millisecond).
        async with server.http() as http:
            again = await json_of(
                await http.post(
                    "/api/v1/auths/signin", json={"email": bob["email"], "password": "pw-" + "x" * 8}
                )
            )
        async with server.http(again["token"]) as http:
            assert (await http.get("/api/v1/auths/")).status_code == 200
        async with server.http(ada["token"]) as http:  # the admin's own tokens are untouched
            assert (await http.get("/api/v1/auths/")).status_code == 200
    finally:
        await tab.close()


async def test_sign_out_all_devices_refusals(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    eve = await server.signup("Eve")
    assert (await _update(server, ada, eve["id"], {"role": "admin"})).status_code == 200
    for actor, target, status in ((bob, eve, 403), (eve, ada, 403), (ada, {"id": "nobody"}, 404)):
        before = await snapshot(server.services.db)
        async with server.http(actor["token"]) as http:
            r = await http.post(f"/api/v1/users/{target['id']}/sessions/revoke")
        assert r.status_code == status, r.text
        assert await snapshot(server.services.db) == before
    async with server.http(ada["token"]) as http:
        assert (await http.get("/api/v1/users/nobody/groups")).status_code == 404
    async with server.http(bob["token"]) as http:
        assert (await http.get(f"/api/v1/users/{eve['id']}/groups")).status_code == 403
