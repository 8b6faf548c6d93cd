"""Every REST route of docs/PROTOCOL.md section 6 that exists, with its refusals; a refused request changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from chatwire.config import Settings
from tests.conftest import RunningServer, run_server
from tests.dbsnap import snapshot

PASSWORD = "pw-" + "x" * 8


@dataclass
class World:
    server: RunningServer
    admin: dict[str, Any]
    bob: dict[str, Any]
    eve: dict[str, Any]

    def http(self, who: dict[str, Any] | None = None) -> httpx.AsyncClient:
        return self.server.http(who["token"] if who else None)


@pytest.fixture
async def world(server: RunningServer) -> World:
    return World(server, await server.signup("Ada"), await server.signup("Bob"), await server.signup("Eve"))


async def refused(
    world: World,
    who: dict[str, Any] | None,
    method: str,
    url: str,
    status: int,
    code: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Send a request that must fail with `status` (and `code`), and check that no stored row changed."""
    before = await snapshot(world.server.services.db)
    async with world.http(who) as http:
        r = await http.request(method, url, **kwargs)
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert "detail" in body
    if code is not None:
        assert body.get("code") == code, body
    assert await snapshot(world.server.services.db) == before
    return body  # type: ignore[no-any-return]


async def ok(world: World, who: dict[str, Any] | None, method: str, url: str, **kwargs: Any) -> Any:
    async with world.http(who) as http:
        r = await http.request(method, url, **kwargs)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


# auths and users


async def test_signup_signin_me_and_bad_input(world: World) -> None:
    assert world.admin["role"] == "admin" and world.bob["role"] == "user"
    for key in ("token", "token_type", "id", "email", "name", "role"):
        assert key in world.bob
    assert world.bob["token_type"] == "Bearer"
    signed = await ok(
        world, None, "POST", "/api/v1/auths/signin", json={"email": world.bob["email"], "password": PASSWORD}
    )
    assert signed["id"] == world.bob["id"] and signed["token"]
    me = await ok(world, world.bob, "GET", "/api/v1/auths/")
    assert me["id"] == world.bob["id"] and me["token"] and "password_hash" not in me

    await refused(world, None, "GET", "/api/v1/auths/", 401, "unauthorized")
    await refused(world, {"token": "garbage"}, "GET", "/api/v1/auths/", 401, "unauthorized")
    await refused(
        world,
        None,
        "POST",
        "/api/v1/auths/signup",
        409,
        "conflict",
        json={"name": "X", "email": world.bob["email"].upper(), "password": "p"},
    )
    for body in (
        {"email": "new@example.com", "password": "p"},
        {"name": "X", "email": "not-an-email", "password": "p"},
        {"name": 5, "email": "new@example.com", "password": "p"},
        {"name": "X", "email": "new@example.com", "password": ["p"]},
        {"name": "", "email": "new@example.com", "password": "p"},
        ["not", "an", "object"],
    ):
        await refused(world, None, "POST", "/api/v1/auths/signup", 422, "invalid_payload", json=body)
    await refused(
        world,
        None,
        "POST",
        "/api/v1/auths/signup",
        422,
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    await refused(
        world,
        None,
        "POST",
        "/api/v1/auths/signin",
        401,
        "unauthorized",
        json={"email": world.bob["email"], "password": "wrong"},
    )
    await refused(
        world,
        None,
        "POST",
        "/api/v1/auths/signin",
        401,
        "unauthorized",
        json={"email": "nobody@example.com", "password": PASSWORD},
    )
    await refused(world, None, "POST", "/api/v1/auths/signin", 422, json={"email": world.bob["email"]})


async def test_concurrent_signups_with_one_email_make_one_account(world: World) -> None:
    async def attempt() -> int:
        async with world.http() as http:
            form = {"name": "Twin", "email": "twin@example.com", "password": "p"}
            return (await http.post("/api/v1/auths/signup", json=form)).status_code

    statuses = sorted(await asyncio.gather(*(attempt() for _ in range(4))))
    assert statuses == [200, 409, 409, 409]


async def test_admin_adds_users_and_lists_them(world: World) -> None:
    added = await ok(
        world,
        world.admin,
        "POST",
        "/api/v1/auths/add",
        json={"name": "Carl", "email": "carl@example.com", "password": "p", "role": "admin"},
    )
    assert added["role"] == "admin" and added["token"]
    users = await ok(world, world.admin, "GET", "/api/v1/users/")
    assert {u["id"] for u in users} == {world.admin["id"], world.bob["id"], world.eve["id"], added["id"]}
    assert all("password_hash" not in u for u in users)

    form = {"name": "Dan", "email": "dan@example.com", "password": "p", "role": "user"}
    await refused(world, world.bob, "POST", "/api/v1/auths/add", 403, "forbidden", json=form)
    await refused(world, None, "POST", "/api/v1/auths/add", 401, "unauthorized", json=form)
    await refused(world, world.admin, "POST", "/api/v1/auths/add", 422, json={**form, "role": "superuser"})
    await refused(
        world,
        world.admin,
        "POST",
        "/api/v1/auths/add",
        409,
        "conflict",
        json={**form, "email": world.eve["email"]},
    )
    await refused(world, world.bob, "GET", "/api/v1/users/", 403, "forbidden")
    await refused(world, world.admin, "GET", "/api/v1/users/?limit=0", 422)


async def test_signout_revokes_only_that_token(world: World) -> None:
    second = await ok(
        world, None, "POST", "/api/v1/auths/signin", json={"email": world.bob["email"], "password": PASSWORD}
    )
    assert await ok(world, world.bob, "POST", "/api/v1/auths/signout") == {"status": True}
    await refused(world, world.bob, "GET", "/api/v1/auths/", 401, "unauthorized")
    await refused(world, world.bob, "POST", "/api/v1/auths/signout", 401, "unauthorized")
    assert (await ok(world, second, "GET", "/api/v1/auths/"))["id"] == world.bob["id"]


async def test_pending_user_is_refused(world: World) -> None:
    pending = await ok(
        world,
        world.admin,
        "POST",
        "/api/v1/auths/add",
        json={"name": "Pat", "email": "pat@example.com", "password": "p", "role": "pending"},
    )
    await refused(world, pending, "GET", "/api/v1/channels/", 403, "forbidden")


# channels


async def create(world: World, who: dict[str, Any], **form: Any) -> dict[str, Any]:
    return await ok(world, who, "POST", "/api/v1/channels/create", json=form)  # type: ignore[no-any-return]


async def members(world: World, cid: str, who: dict[str, Any]) -> set[str]:
    return set((await ok(world, who, "GET", f"/api/v1/channels/{cid}"))["user_ids"])


async def test_channel_types_and_membership_rules(world: World) -> None:
    a, b, e = world.admin, world.bob, world.eve
    public = await create(world, a, name="general")
    assert public["type"] is None and public["is_private"] is False
    assert await members(world, public["id"], a) == {a["id"], b["id"], e["id"]}
    private = await create(world, a, name="staff", is_private=True, user_ids=[b["id"]])
    assert await members(world, private["id"], a) == {a["id"], b["id"]}
    group = await create(world, b, name="pals", type="group", user_ids=[e["id"]])
    assert await members(world, group["id"], b) == {b["id"], e["id"]}
    dm = await create(world, b, name="dm", type="dm", user_ids=[e["id"]])
    assert dm["type"] == "dm" and dm["is_private"] is True
    # the same dm again is the existing one, in either direction
    assert (await create(world, e, name="dm", type="dm", user_ids=[b["id"]]))["id"] == dm["id"]

    listed = await ok(world, e, "GET", "/api/v1/channels/")
    assert {c["id"] for c in listed} == {public["id"], group["id"], dm["id"]}
    assert all("unread_count" in c for c in listed)
    got = await ok(world, e, "GET", f"/api/v1/channels/{group['id']}")
    assert got["name"] == "pals" and set(got["user_ids"]) == {b["id"], e["id"]}

    await refused(world, b, "POST", "/api/v1/channels/create", 403, "forbidden", json={"name": "std"})
    await refused(
        world,
        b,
        "POST",
        "/api/v1/channels/create",
        400,
        "invalid_payload",
        json={"name": "d", "type": "dm", "user_ids": []},
    )
    await refused(
        world,
        b,
        "POST",
        "/api/v1/channels/create",
        400,
        "invalid_payload",
        json={"name": "d", "type": "dm", "user_ids": [a["id"], e["id"]]},
    )
    await refused(
        world,
        b,
        "POST",
        "/api/v1/channels/create",
        404,
        "not_found",
        json={"name": "g", "type": "group", "user_ids": ["ghost"]},
    )
    for body in (
        {"type": "group"},
        {"name": 3, "type": "group"},
        {"name": "g", "type": "club"},
        {"name": "g", "type": "group", "user_ids": "abc"},
        {"name": "g", "type": "group", "is_private": "maybe"},
    ):
        await refused(world, b, "POST", "/api/v1/channels/create", 422, "invalid_payload", json=body)

    await refused(world, a, "GET", "/api/v1/channels/nope", 404, "not_found")
    await refused(world, a, "GET", f"/api/v1/channels/{group['id']}", 403, "not_member")
    await refused(world, None, "GET", "/api/v1/channels/", 401, "unauthorized")


async def test_members_add_remove_and_delete(world: World) -> None:
    a, b, e = world.admin, world.bob, world.eve
    group = await create(world, b, name="pals", type="group")
    cid = group["id"]
    added = await ok(
        world, b, "POST", f"/api/v1/channels/{cid}/update/members/add", json={"user_ids": [e["id"]]}
    )
    assert set(added["user_ids"]) == {b["id"], e["id"]}
    url = f"/api/v1/channels/{cid}/update/members"
    await refused(world, e, "POST", f"{url}/add", 403, "forbidden", json={"user_ids": [a["id"]]})
    await refused(world, b, "POST", f"{url}/add", 404, "not_found", json={"user_ids": ["ghost"]})
    await refused(world, b, "POST", f"{url}/add", 422, "invalid_payload", json={"user_ids": []})
    await refused(world, b, "POST", f"{url}/add", 422, "invalid_payload", json={"user_ids": [1]})
    await refused(
        world,
        b,
        "POST",
        "/api/v1/channels/nope/update/members/add",
        404,
        "not_found",
        json={"user_ids": [a["id"]]},
    )
    # an admin manages any channel
    removed = await ok(world, a, "POST", f"{url}/remove", json={"user_ids": [e["id"]]})
    assert set(removed["user_ids"]) == {b["id"]}
    await refused(world, e, "GET", f"/api/v1/channels/{cid}", 403, "not_member")

    dm = await create(world, b, name="dm", type="dm", user_ids=[e["id"]])
    await refused(
        world,
        b,
        "POST",
        f"/api/v1/channels/{dm['id']}/update/members/add",
        400,
        "invalid_payload",
        json={"user_ids": [a["id"]]},
    )
    await refused(
        world,
        b,
        "POST",
        f"/api/v1/channels/{dm['id']}/update/members/remove",
        400,
        "invalid_payload",
        json={"user_ids": [e["id"]]},
    )

    await refused(world, e, "DELETE", f"/api/v1/channels/{dm['id']}/delete", 403, "forbidden")
    await refused(world, b, "DELETE", "/api/v1/channels/nope/delete", 404, "not_found")
    assert await ok(world, b, "DELETE", f"/api/v1/channels/{cid}/delete") is True
    await refused(world, b, "GET", f"/api/v1/channels/{cid}", 404, "not_found")


async def test_messages_threads_updates_reactions_deletes(world: World) -> None:
    a, b, e = world.admin, world.bob, world.eve
    cid = (await create(world, b, name="pals", type="group", user_ids=[e["id"]]))["id"]
    base = f"/api/v1/channels/{cid}/messages"
    first = await ok(
        world, b, "POST", f"{base}/post", json={"content": "one", "temp_id": "t-1", "data": {"x": 1}}
    )
    for key in (
        "id",
        "channel_id",
        "user_id",
        "content",
        "parent_id",
        "reply_count",
        "reactions",
        "created_at",
        "updated_at",
    ):
        assert key in first
    assert first["temp_id"] == "t-1" and first["reply_count"] == 0 and first["reactions"] == []
    second = await ok(world, e, "POST", f"{base}/post", json={"content": "two"})
    reply = await ok(world, e, "POST", f"{base}/post", json={"content": "re", "parent_id": first["id"]})
    nested = await ok(world, b, "POST", f"{base}/post", json={"content": "re-re", "parent_id": reply["id"]})
    assert nested["parent_id"] == first["id"]  # a reply to a reply joins the thread

    listed = await ok(world, b, "GET", base)
    assert [m["id"] for m in listed] == [second["id"], first["id"]]
    assert listed[1]["reply_count"] == 2
    assert [m["id"] for m in await ok(world, b, "GET", f"{base}?skip=1&limit=1")] == [first["id"]]
    thread = await ok(world, e, "GET", f"{base}/{first['id']}/thread")
    assert [m["id"] for m in thread] == [nested["id"], reply["id"]]

    edited = await ok(world, b, "POST", f"{base}/{first['id']}/update", json={"content": "one!"})
    assert edited["content"] == "one!"
    by_admin = await ok(world, a, "POST", f"{base}/{first['id']}/update", json={"content": "moderated"})
    assert by_admin["content"] == "moderated"

    r = await ok(world, e, "POST", f"{base}/{first['id']}/reactions/add", json={"name": "+1"})
    assert (
        r["reactions"]
        == [{"name": "+1", "user_ids": [e["id"]], "users": [{"id": e["id"], "name": e["name"]}], "count": 1}]
        and r["name"] == "+1"
    )
    again = await ok(world, e, "POST", f"{base}/{first['id']}/reactions/add", json={"name": "+1"})
    assert again["reactions"] == r["reactions"]
    gone = await ok(world, e, "POST", f"{base}/{first['id']}/reactions/remove", json={"name": "+1"})
    assert gone["reactions"] == []

    # refusals
    await refused(world, a, "POST", f"{base}/post", 403, "not_member", json={"content": "x"})
    await refused(
        world, b, "POST", "/api/v1/channels/nope/messages/post", 404, "not_found", json={"content": "x"}
    )
    await refused(
        world, b, "POST", f"{base}/post", 404, "not_found", json={"content": "x", "parent_id": "nope"}
    )
    for body in ({}, {"content": 5}, {"content": "x", "parent_id": 7}, {"content": "x", "data": "str"}):
        await refused(world, b, "POST", f"{base}/post", 422, "invalid_payload", json=body)
    await refused(world, a, "GET", base, 403, "not_member")
    await refused(world, b, "GET", f"{base}?limit=0", 422)
    await refused(world, b, "GET", f"{base}?skip=-1", 422)
    await refused(world, b, "GET", f"{base}?limit=abc", 422)
    await refused(world, a, "GET", f"{base}/{first['id']}/thread", 403, "not_member")
    await refused(world, b, "GET", f"{base}/nope/thread", 404, "not_found")
    await refused(
        world, e, "POST", f"{base}/{first['id']}/update", 403, "forbidden", json={"content": "hijack"}
    )
    await refused(world, b, "POST", f"{base}/nope/update", 404, "not_found", json={"content": "x"})
    await refused(world, b, "POST", f"{base}/{first['id']}/update", 422, json={"content": None})
    await refused(
        world, a, "POST", f"{base}/{first['id']}/reactions/add", 403, "not_member", json={"name": "+1"}
    )
    await refused(world, b, "POST", f"{base}/{first['id']}/reactions/add", 422, json={"name": ""})
    await refused(world, b, "POST", f"{base}/{first['id']}/reactions/add", 422, json={"name": "x" * 65})
    await refused(world, b, "POST", f"{base}/nope/reactions/add", 404, "not_found", json={"name": "+1"})
    await refused(world, e, "DELETE", f"{base}/{first['id']}/delete", 403, "forbidden")
    await refused(world, b, "DELETE", f"{base}/nope/delete", 404, "not_found")
    # a message id of another channel is not found through this channel
    other = (await create(world, b, name="other", type="group"))["id"]
    await refused(
        world, b, "DELETE", f"/api/v1/channels/{other}/messages/{first['id']}/delete", 404, "not_found"
    )

    # an author who left the channel can no longer edit or delete
    outsider = await ok(world, e, "POST", f"{base}/post", json={"content": "bye"})
    await ok(world, b, "POST", f"/api/v1/channels/{cid}/update/members/remove", json={"user_ids": [e["id"]]})
    await refused(
        world, e, "POST", f"{base}/{outsider['id']}/update", 403, "not_member", json={"content": "x"}
    )
    await refused(world, e, "DELETE", f"{base}/{outsider['id']}/delete", 403, "not_member")
    await ok(world, b, "POST", f"/api/v1/channels/{cid}/update/members/add", json={"user_ids": [e["id"]]})
    assert await ok(world, e, "DELETE", f"{base}/{outsider['id']}/delete") is True

    # deletes: a reply lowers the parent's count, the parent takes its thread with it
    assert await ok(world, e, "DELETE", f"{base}/{reply['id']}/delete") is True
    assert (await ok(world, b, "GET", base))[1]["reply_count"] == 1
    assert await ok(world, b, "DELETE", f"{base}/{first['id']}/delete") is True
    assert [m["id"] for m in await ok(world, b, "GET", base)] == [second["id"]]
    await refused(world, b, "GET", f"{base}/{first['id']}/thread", 404, "not_found")
    # an admin deletes anyone's message
    assert await ok(world, a, "DELETE", f"{base}/{second['id']}/delete") is True


async def test_unread_count_and_read_marker_over_rest(world: World) -> None:
    b, e = world.bob, world.eve
    cid = (await create(world, b, name="pals", type="group", user_ids=[e["id"]]))["id"]
    await ok(world, b, "POST", f"/api/v1/channels/{cid}/messages/post", json={"content": "1"})
    await ok(world, b, "POST", f"/api/v1/channels/{cid}/messages/post", json={"content": "2"})
    listed = {c["id"]: c for c in await ok(world, e, "GET", "/api/v1/channels/")}
    assert listed[cid]["unread_count"] == 2
    assert {c["id"]: c for c in await ok(world, b, "GET", "/api/v1/channels/")}[cid]["unread_count"] == 0


# chats


async def test_chats_new_list_get(world: World) -> None:
    b, e = world.bob, world.eve
    form = {
        "chat": {
            "title": "T",
            "history": {
                "currentId": "m2",
                "messages": {
                    "m1": {"id": "m1", "parentId": None, "role": "user", "content": "hi"},
                    "m2": {"id": "m2", "parentId": "m1", "role": "assistant", "content": "yo", "done": True},
                },
            },
        }
    }
    chat = await ok(world, b, "POST", "/api/v1/chats/new", json=form)
    for key in ("id", "user_id", "title", "chat", "created_at", "updated_at"):
        assert key in chat
    assert chat["chat"]["history"]["messages"]["m2"]["content"] == "yo"
    assert chat["chat"]["history"]["messages"]["m1"]["childrenIds"] == ["m2"]
    empty = await ok(world, b, "POST", "/api/v1/chats/new", json={"chat": {"title": "empty"}})
    assert empty["chat"]["history"] == {"messages": {}, "currentId": None}
    assert {c["id"] for c in await ok(world, b, "GET", "/api/v1/chats/")} == {chat["id"], empty["id"]}
    assert await ok(world, e, "GET", "/api/v1/chats/") == []
    got = await ok(world, b, "GET", f"/api/v1/chats/{chat['id']}")
    assert got["chat"]["history"] == chat["chat"]["history"]

    await refused(world, e, "GET", f"/api/v1/chats/{chat['id']}", 404, "not_found")
    await refused(world, b, "GET", "/api/v1/chats/nope", 404, "not_found")
    await refused(world, None, "GET", "/api/v1/chats/", 401, "unauthorized")
    for body in ({}, {"chat": "text"}, {"chat": [1]}):
        await refused(world, b, "POST", "/api/v1/chats/new", 422, "invalid_payload", json=body)
    # an admin may read any chat
    assert (await ok(world, world.admin, "GET", f"/api/v1/chats/{chat['id']}"))["id"] == chat["id"]


# notes


async def test_notes_crud_and_access(world: World) -> None:
    a, b, e = world.admin, world.bob, world.eve
    note = await ok(
        world,
        b,
        "POST",
        "/api/v1/notes/create",
        json={"title": "N", "data": {"content": {"md": "x", "html": "<p>x</p>", "json": None}}},
    )
    for key in ("id", "user_id", "title", "data", "access_control"):
        assert key in note
    nid = note["id"]
    url = f"/api/v1/notes/{nid}"
    await refused(world, e, "GET", url, 404, "not_found")
    assert (await ok(world, a, "GET", url))["id"] == nid  # admin reads anything
    await refused(world, e, "POST", f"{url}/access/update", 404, "not_found", json={"access_control": None})

    granted = await ok(
        world, b, "POST", f"{url}/access/update", json={"access_control": {"read": {"user_ids": [e["id"]]}}}
    )
    assert granted["access_control"]["read"]["user_ids"] == [e["id"]]
    assert (await ok(world, e, "GET", url))["title"] == "N"
    assert nid in {n["id"] for n in await ok(world, e, "GET", "/api/v1/notes/")}
    await refused(world, e, "POST", f"{url}/update", 403, "forbidden", json={"title": "hijack"})
    await refused(world, e, "POST", f"{url}/access/update", 403, "forbidden", json={"access_control": None})
    await refused(world, e, "DELETE", f"{url}/delete", 403, "forbidden")

    await ok(
        world, b, "POST", f"{url}/access/update", json={"access_control": {"write": {"user_ids": [e["id"]]}}}
    )
    updated = await ok(
        world, e, "POST", f"{url}/update", json={"title": "N2", "data": {"content": {"md": "y"}}}
    )
    assert updated["title"] == "N2" and updated["data"] == {"content": {"md": "y"}}
    await refused(world, e, "DELETE", f"{url}/delete", 403, "forbidden")

    for body in (
        {"title": 5},
        {"title": "x", "access_control": {"read": {"user_ids": "abc"}}},
        {"data": "str"},
    ):
        await refused(world, b, "POST", "/api/v1/notes/create", 422, "invalid_payload", json=body)
    await refused(world, b, "POST", f"{url}/update", 422, "invalid_payload", json={"title": ["x"]})
    await refused(world, b, "GET", "/api/v1/notes/nope", 404, "not_found")
    await refused(world, b, "POST", "/api/v1/notes/nope/update", 404, "not_found", json={"title": "x"})

    assert await ok(world, b, "DELETE", f"{url}/delete") is True
    await refused(world, b, "GET", url, 404, "not_found")
    await refused(world, e, "GET", url, 404, "not_found")


# system


async def test_usage_and_health(world: World) -> None:
    assert await ok(world, world.bob, "GET", "/api/usage") == {"model_ids": [], "user_count": 0}
    await refused(world, None, "GET", "/api/usage", 401, "unauthorized")
    assert await ok(world, None, "GET", "/health") == {"status": True}
    ready = await ok(world, None, "GET", "/health/ready")
    assert ready["status"] is True and ready["checks"]["database"] is True


# oversized bodies


@pytest.fixture
async def small_server(settings: Settings) -> AsyncIterator[RunningServer]:
    async with run_server(settings.model_copy(update={"max_payload_bytes": 4096})) as running:
        yield running


async def test_oversized_body_is_refused_with_413(small_server: RunningServer) -> None:
    world = World(small_server, await small_server.signup("Ada"), await small_server.signup("Bob"), {})
    cid = (await create(world, world.admin, name="general"))["id"]
    url = f"/api/v1/channels/{cid}/messages/post"
    big = {"content": "x" * 5000}
    body = await refused(world, world.bob, "POST", url, 413, "payload_too_large", json=big)
    assert "4096" in body["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: the limit applies while streaming
        yield b'{"content": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    await refused(
        world,
        world.bob,
        "POST",
        url,
        413,
        "payload_too_large",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    await refused(
        world,
        None,
        "POST",
        "/api/v1/auths/signup",
        413,
        "payload_too_large",
        json={"name": "n" * 5000, "email": "z@example.com", "password": "p"},
    )
    # just under the limit is fine
    assert (await ok(world, world.bob, "POST", url, json={"content": "x" * 3000}))["content"] == "x" * 3000
