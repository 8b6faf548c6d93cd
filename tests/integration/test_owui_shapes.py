"""The REST and socket shapes Open WebUI 0.12.4's frontend sends and reads, beside chatwire's older ones.

The browser test (tests/e2e/owui/) drives the real frontend through them; these pin each shape down, with its
refusals, and show the older shapes still work.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import RunningServer
from tests.dbsnap import snapshot
from tests.sio import RecordingClient


async def _people(server: RunningServer) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    return await server.signup("Ada"), await server.signup("Bob"), await server.signup("Eve")


async def _get(server: RunningServer, who: dict[str, Any], url: str, **kw: Any) -> Any:
    async with server.http(who["token"]) as c:
        r = await c.get(url, **kw)
    assert r.status_code == 200, r.text
    return r.json()


async def _post(server: RunningServer, who: dict[str, Any], url: str, body: Any) -> Any:
    async with server.http(who["token"]) as c:
        r = await c.post(url, json=body)
    assert r.status_code == 200, r.text
    return r.json()


async def _refused(
    server: RunningServer, who: dict[str, Any], method: str, url: str, status: int, **kw: Any
) -> Any:
    before = await snapshot(server.services.db)
    async with server.http(who["token"]) as c:
        r = await c.request(method, url, **kw)
    assert r.status_code == status, r.text
    assert {"detail", "code"} <= set(r.json())
    assert await snapshot(server.services.db) == before
    return r.json()


# auth and users


async def test_the_session_user_carries_permissions(server: RunningServer) -> None:
    ada, bob, _ = await _people(server)
    for who in (ada, bob):
        assert who["permissions"]["chat"]["temporary"] is True  # sign-up answers carry them too
        me = await _get(server, who, "/api/v1/auths/")
        perms = me["permissions"]
        assert perms["features"]["channels"] and perms["features"]["notes"]
        assert perms["access_grants"] == {"allow_users": True, "allow_groups": False}
        assert perms["workspace"]["tools"] is False  # not chatwire's
    async with server.http() as c:
        signed_in = await c.post(
            "/api/v1/auths/signin", json={"email": bob["email"], "password": "pw-" + "x" * 8}
        )
    assert signed_in.json()["permissions"] == me["permissions"]


async def test_users_page_shape_for_admins_and_the_plain_list_kept(server: RunningServer) -> None:
    ada, bob, eve = await _people(server)
    # Sign-up order: `created_at` is in seconds (as Open WebUI keeps it) and user ids sort by time within one.
    signed_up = [ada["id"], bob["id"], eve["id"]]
    plain = await _get(server, ada, "/api/v1/users/")
    assert [u["id"] for u in plain] == signed_up
    page = await _get(server, ada, "/api/v1/users/", params={"page": 1})
    assert page["total"] == 3 and [u["id"] for u in page["users"]] == signed_up
    assert page["users"][0]["group_ids"] == []
    found = await _get(
        server,
        ada,
        "/api/v1/users/",
        params={"page": 1, "query": "EV", "order_by": "name", "direction": "desc"},
    )
    assert found["total"] == 1 and found["users"][0]["id"] == eve["id"]
    by_name = await _get(
        server, ada, "/api/v1/users/", params={"page": 1, "order_by": "name", "direction": "desc"}
    )
    assert [u["name"] for u in by_name["users"]] == ["Eve", "Bob", "Ada"]
    assert (await _get(server, ada, "/api/v1/users/", params={"page": 2}))["users"] == []
    assert (await _refused(server, bob, "GET", "/api/v1/users/?page=1", 403))["code"] == "forbidden"
    await _refused(server, ada, "GET", "/api/v1/users/?page=0", 422)
    await _refused(server, ada, "GET", "/api/v1/users/?page=1&order_by=password_hash", 422)


# channels


async def test_the_create_forms_defaults_and_the_channel_page_fields(server: RunningServer) -> None:
    ada, bob, eve = await _people(server)
    # Open WebUI's create form: a standard channel is `type: ""`; `is_private` and `user_ids` may be null.
    standard = await _post(
        server,
        ada,
        "/api/v1/channels/create",
        {
            "name": "general",
            "type": "",
            "is_private": None,
            "user_ids": None,
            "group_ids": [],
            "access_grants": [],
        },
    )
    assert standard["type"] is None and standard["is_private"] is False
    assert {(g["principal_id"], g["permission"]) for g in standard["access_grants"]} == {
        ("*", "read"),
        ("*", "write"),
    }
    group = await _post(
        server,
        bob,
        "/api/v1/channels/create",
        {"name": "team", "type": "group", "is_private": True, "user_ids": [eve["id"]], "group_ids": []},
    )
    seen = await _get(server, eve, f"/api/v1/channels/{group['id']}")
    assert seen["write_access"] is True and seen["is_manager"] is False and seen["user_count"] == 2
    assert {u["id"] for u in seen["users"]} == {bob["id"], eve["id"]} and set(seen["user_ids"]) == {
        bob["id"],
        eve["id"],
    }
    assert {"id", "name", "role", "profile_image_url", "is_active"} <= set(seen["users"][0])
    assert (await _get(server, bob, f"/api/v1/channels/{group['id']}"))["is_manager"] is True
    assert seen["access_grants"] == []  # a group is reached through membership
    assert (await _get(server, ada, f"/api/v1/channels/{standard['id']}"))["user_count"] == 3
    # still members only, and a bad type is still refused
    assert (await _refused(server, ada, "GET", f"/api/v1/channels/{group['id']}", 403))[
        "code"
    ] == "not_member"
    await _refused(server, bob, "POST", "/api/v1/channels/create", 422, json={"name": "x", "type": "public"})
    # a dm lists its members (Open WebUI names a dm after the other person)
    dm = await _post(
        server, bob, "/api/v1/channels/create", {"name": "", "type": "dm", "user_ids": [eve["id"]]}
    )
    listed = {c["id"]: c for c in await _get(server, eve, "/api/v1/channels/")}
    assert {u["name"] for u in listed[dm["id"]]["users"]} == {"Bob", "Eve"}


async def test_reactions_name_their_users_and_replies_their_time(server: RunningServer) -> None:
    ada, bob, _ = await _people(server)
    channel = await _post(
        server, ada, "/api/v1/channels/create", {"name": "t", "type": "group", "user_ids": [bob["id"]]}
    )
    base = f"/api/v1/channels/{channel['id']}/messages"
    listener = await RecordingClient(server.url).connect(ada["token"])
    try:
        message = await _post(server, ada, f"{base}/post", {"content": "hi"})
        assert message["reply_count"] == 0 and message["latest_reply_at"] is None
        await _post(server, bob, f"{base}/{message['id']}/reactions/add", {"name": "thumbsup"})
        added = await listener.wait_for(
            "events:channel", lambda e: e["data"]["type"] == "message:reaction:add", timeout=5
        )
        reaction = {
            "name": "thumbsup",
            "users": [{"id": bob["id"], "name": "Bob"}],
            "user_ids": [bob["id"]],
            "count": 1,
        }
        assert added["data"]["data"]["reactions"] == [reaction]
        reply = await _post(server, bob, f"{base}/post", {"content": "yes", "parent_id": message["id"]})
        stored = (await _get(server, ada, base))[0]
        assert stored["reactions"] == [reaction]
        assert stored["reply_count"] == 1 and stored["latest_reply_at"] == reply["created_at"]
    finally:
        await listener.close()


async def test_pins(server: RunningServer) -> None:
    ada, bob, eve = await _people(server)
    channel = await _post(
        server, ada, "/api/v1/channels/create", {"name": "t", "type": "group", "user_ids": [bob["id"]]}
    )
    base = f"/api/v1/channels/{channel['id']}/messages"
    first = await _post(server, ada, f"{base}/post", {"content": "one"})
    second = await _post(server, ada, f"{base}/post", {"content": "two"})
    assert first["is_pinned"] is False and first["pinned_by"] is None
    listener = await RecordingClient(server.url).connect(ada["token"])
    try:
        pinned = await _post(server, bob, f"{base}/{first['id']}/pin", {"is_pinned": True})
        assert pinned["is_pinned"] is True and pinned["pinned_by"] == bob["id"] and pinned["pinned_at"] > 0
        update = await listener.wait_for("events:channel", lambda e: e["data"]["type"] == "message:update")
        assert update["data"]["data"]["is_pinned"] is True
    finally:
        await listener.close()
    await _post(server, ada, f"{base}/{second['id']}/pin", {"is_pinned": True})
    assert [m["content"] for m in await _get(server, bob, f"{base}/pinned")] == ["two", "one"]
    await _post(server, ada, f"{base}/{second['id']}/pin", {"is_pinned": False})
    assert [m["id"] for m in await _get(server, bob, f"{base}/pinned", params={"page": 1})] == [first["id"]]
    assert await _get(server, bob, f"{base}/pinned", params={"page": 2}) == []
    assert (await _refused(server, eve, "POST", f"{base}/{first['id']}/pin", 403, json={"is_pinned": False}))[
        "code"
    ] == "not_member"
    await _refused(server, eve, "GET", f"{base}/pinned", 403)
    await _refused(server, bob, "POST", f"{base}/{first['id']}/pin", 422, json={"is_pinned": "yes"})
    await _refused(server, bob, "POST", f"{base}/nope/pin", 404, json={"is_pinned": True})


# notes


async def test_notes_in_access_grants_with_write_access_search_and_pins(server: RunningServer) -> None:
    ada, bob, eve = await _people(server)
    grants = [{"principal_type": "user", "principal_id": bob["id"], "permission": "read"}]
    note = await _post(
        server,
        ada,
        "/api/v1/notes/create",
        {"title": "Plan", "data": {"content": {"md": "x"}}, "access_grants": grants},
    )
    assert [(g["principal_id"], g["permission"], g["resource_id"]) for g in note["access_grants"]] == [
        (bob["id"], "read", note["id"])
    ]
    assert note["access_control"]["read"]["user_ids"] == [bob["id"]]  # the older shape, same grants
    assert (await _get(server, bob, f"/api/v1/notes/{note['id']}"))["write_access"] is False
    assert (await _get(server, ada, f"/api/v1/notes/{note['id']}"))["write_access"] is True
    # write through access_grants; the older access_control is still accepted
    write = [{"principal_type": "user", "principal_id": bob["id"], "permission": "write"}]
    await _post(server, ada, f"/api/v1/notes/{note['id']}/access/update", {"access_grants": write})
    assert (await _get(server, bob, f"/api/v1/notes/{note['id']}"))["write_access"] is True
    await _post(
        server,
        ada,
        f"/api/v1/notes/{note['id']}/access/update",
        {"access_control": {"read": {"user_ids": [eve["id"]]}}},
    )
    assert (await _get(server, eve, f"/api/v1/notes/{note['id']}"))["write_access"] is False
    await _refused(server, bob, "GET", f"/api/v1/notes/{note['id']}", 404)
    # grants chatwire cannot keep are refused, not dropped
    for bad in (
        [{"principal_type": "group", "principal_id": "g1", "permission": "read"}],
        [{"principal_type": "user", "principal_id": "*", "permission": "read"}],
        [{"principal_type": "user", "principal_id": bob["id"], "permission": "admin"}],
    ):
        body = await _refused(
            server, ada, "POST", f"/api/v1/notes/{note['id']}/access/update", 400, json={"access_grants": bad}
        )
        assert body["code"] == "invalid_payload"

    await _post(server, bob, "/api/v1/notes/create", {"title": "Bob's list"})
    mine = await _get(server, ada, "/api/v1/notes/search", params={"view_option": "created"})
    assert [n["title"] for n in mine["items"]] == ["Plan"] and mine["items"][0]["user"]["name"] == "Ada"
    assert (await _get(server, eve, "/api/v1/notes/search", params={"query": "pla"}))["total"] == 1
    assert (await _get(server, eve, "/api/v1/notes/search", params={"permission": "write"}))["total"] == 0
    ordered = await _get(
        server, ada, "/api/v1/notes/search", params={"order_by": "title", "direction": "asc"}
    )
    assert [n["title"] for n in ordered["items"]] == ["Bob's list", "Plan"]  # an admin sees every note
    assert await _get(server, ada, "/api/v1/notes/pinned") == []
    await _refused(server, ada, "GET", "/api/v1/notes/search?view_option=everything", 422)


# socket: events:chat rooms


async def test_chat_rooms_join_leave_and_typing(server: RunningServer) -> None:
    ada, bob, _ = await _people(server)
    chat = await _post(
        server, ada, "/api/v1/chats/new", {"chat": {"title": "T", "history": {"messages": {}}}}
    )
    one = await RecordingClient(server.url).connect(ada["token"])
    two = await RecordingClient(server.url).connect(ada["token"])
    intruder = await RecordingClient(server.url).connect(bob["token"])
    try:
        # typing before joining, and joining someone else's chat, are refused
        typing = {"chat_id": chat["id"], "data": {"type": "typing", "data": {"typing": True}}}
        assert (await one.call("events:chat", typing))["error"]["code"] == "not_found"
        join = {"chat_id": chat["id"], "data": {"type": "join"}}
        assert (await intruder.call("events:chat", join))["error"]["code"] == "not_found"
        assert await one.call("events:chat", join) == {"ok": True}
        assert await two.call("events:chat", join) == {"ok": True}
        assert (await intruder.call("events:chat", typing))["error"]["code"] == "not_found"
        assert await one.call("events:chat", typing) == {"ok": True}
        got = await two.wait_for("events", lambda e: e["data"]["type"] == "typing")
        assert got == {
            "chat_id": chat["id"],
            "user_id": ada["id"],
            "user": {"id": ada["id"], "name": "Ada"},
            "shared": True,
            "data": {"type": "typing", "data": {"typing": True}},
        }
        assert not [
            e for e in one.received["events"] if e["data"]["type"] == "typing"
        ]  # not back to the sender
        assert not [e for e in intruder.received["events"] if e["data"]["type"] == "typing"]
        bad = {"chat_id": chat["id"], "data": {"type": "typing", "data": {"typing": "yes"}}}
        assert (await one.call("events:chat", bad))["error"]["code"] == "invalid_payload"
        # after leaving, typing is refused again; read markers work as before
        assert await one.call("events:chat", {"chat_id": chat["id"], "data": {"type": "leave"}}) == {
            "ok": True
        }
        assert (await one.call("events:chat", typing))["error"]["code"] == "not_found"
        read = await one.call("events:chat", {"chat_id": chat["id"], "data": {"type": "last_read_at"}})
        assert read["ok"] is True and isinstance(read["last_read_at"], int)
        await asyncio.sleep(0.2)
    finally:
        for c in (one, two, intruder):
            await c.close()


# chats


async def test_a_chats_own_tags_come_from_its_tag_events(server: RunningServer) -> None:
    """`GET /api/v1/chats/{id}/tags` (the chat page's tag row): the tags a `chat:tags` event stored, owner only."""
    ada, bob, _ = await _people(server)
    chat = await _post(server, ada, "/api/v1/chats/new", {"chat": {"title": "tagged"}})
    assert await _get(server, ada, f"/api/v1/chats/{chat['id']}/tags") == []
    await _post(
        server,
        ada,
        f"/api/v1/chats/{chat['id']}/messages/m1/event",
        {"type": "chat:tags", "data": {"tags": ["Work Notes", "ideas"]}},
    )
    for _ in range(100):  # the writer stores chat-level fields asynchronously
        tags = await _get(server, ada, f"/api/v1/chats/{chat['id']}/tags")
        if tags:
            break
        await asyncio.sleep(0.05)
    assert tags == [
        {"id": "work_notes", "name": "Work Notes", "user_id": ada["id"], "meta": None},
        {"id": "ideas", "name": "ideas", "user_id": ada["id"], "meta": None},
    ]
    assert {t["id"] for t in await _get(server, ada, "/api/v1/chats/all/tags")} == {"work_notes", "ideas"}
    await _refused(server, bob, "GET", f"/api/v1/chats/{chat['id']}/tags", 404)
