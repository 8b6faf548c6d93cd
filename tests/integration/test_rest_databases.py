"""The REST API on both databases: a full round on SQLite and PostgreSQL, and input that only one of them would
choke on (NUL characters, over-long ids, huge offsets) refused the same way on both, changing nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from chatwire.config import Settings
from tests.conftest import RunningServer, postgres_database, run_server
from tests.integration.test_rest import World, ok, refused


@pytest.fixture(params=["sqlite", "postgres"])
async def db_world(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[World]:
    async def world_on(server: RunningServer) -> World:
        return World(
            server, await server.signup("Ada"), await server.signup("Bob"), await server.signup("Eve")
        )

    if request.param == "sqlite":
        async with run_server(settings) as server:
            yield await world_on(server)
        return
    async with (
        postgres_database() as url,
        run_server(settings.model_copy(update={"database_url": url})) as server,
    ):
        yield await world_on(server)


async def test_round_trip(db_world: World) -> None:
    w = db_world
    a, b, e = w.admin, w.bob, w.eve
    cid = (await ok(w, a, "POST", "/api/v1/channels/create", json={"name": "general"}))["id"]
    base = f"/api/v1/channels/{cid}/messages"
    m = await ok(w, b, "POST", f"{base}/post", json={"content": "héllo 🌍", "data": {"k": [1, 2]}})
    await ok(w, e, "POST", f"{base}/post", json={"content": "re", "parent_id": m["id"]})
    await ok(w, e, "POST", f"{base}/{m['id']}/reactions/add", json={"name": "🎉"})
    listed = await ok(w, a, "GET", base)
    assert listed[0]["content"] == "héllo 🌍" and listed[0]["data"] == {"k": [1, 2]}
    assert listed[0]["reply_count"] == 1 and listed[0]["reactions"][0]["name"] == "🎉"
    assert {c["id"]: c["unread_count"] for c in await ok(w, a, "GET", "/api/v1/channels/")} == {cid: 1}

    chat = await ok(
        w,
        b,
        "POST",
        "/api/v1/chats/new",
        json={"chat": {"title": "T", "history": {"currentId": "x", "messages": {"x": {"content": "ü"}}}}},
    )
    assert (await ok(w, b, "GET", f"/api/v1/chats/{chat['id']}"))["chat"]["history"]["messages"]["x"][
        "content"
    ] == "ü"
    note = await ok(
        w,
        b,
        "POST",
        "/api/v1/notes/create",
        json={"title": "n", "access_control": {"read": {"user_ids": [e["id"]]}}},
    )
    assert (await ok(w, e, "GET", f"/api/v1/notes/{note['id']}"))["title"] == "n"


NUL = "a\x00b"


def bad_inputs(cid: str, mid: str, nid: str) -> list[tuple[str, str, int, dict[str, Any]]]:
    base = f"/api/v1/channels/{cid}/messages"
    long_id = "u" * 65
    return [
        (
            "POST",
            "/api/v1/auths/signup",
            422,
            {"json": {"name": NUL, "email": "n@example.com", "password": "p"}},
        ),
        ("POST", "/api/v1/channels/create", 422, {"json": {"name": NUL, "type": "group"}}),
        (
            "POST",
            "/api/v1/channels/create",
            422,
            {"json": {"name": "g", "type": "group", "user_ids": [long_id]}},
        ),
        ("POST", f"/api/v1/channels/{cid}/update/members/add", 422, {"json": {"user_ids": [long_id]}}),
        ("POST", f"{base}/post", 422, {"json": {"content": NUL}}),
        ("POST", f"{base}/post", 422, {"json": {"content": "x", "temp_id": NUL}}),
        ("POST", f"{base}/{mid}/update", 422, {"json": {"content": NUL}}),
        ("POST", f"{base}/{mid}/reactions/add", 422, {"json": {"name": NUL}}),
        ("GET", f"{base}?skip=99999999999999999999", 422, {}),
        ("GET", f"{base}?limit=99999999999999999999", 422, {}),
        ("GET", "/api/v1/chats/?skip=99999999999999999999", 422, {}),
        ("GET", f"/api/v1/channels/{cid}%00", 400, {}),
        ("POST", "/api/v1/chats/new", 400, {"json": {"chat": {"title": "t" * 1025}}}),
        # NUL anywhere in a body is refused at the edge, before any route (422 like a field's validation).
        ("POST", "/api/v1/chats/new", 422, {"json": {"chat": {"title": NUL}}}),
        (
            "POST",
            "/api/v1/chats/new",
            422,
            {"json": {"chat": {"history": {"messages": {"m": {"content": NUL}}}}}},
        ),
        (
            "POST",
            "/api/v1/chats/new",
            400,
            {"json": {"chat": {"history": {"messages": {"m": {"content": {"x": 1}}}}}}},
        ),
        (
            "POST",
            "/api/v1/chats/new",
            400,
            {"json": {"chat": {"history": {"messages": {long_id: {"content": "x"}}}}}},
        ),
        ("POST", "/api/v1/chats/new", 400, {"json": {"chat": {"history": {"currentId": long_id}}}}),
        ("POST", "/api/v1/chats/new", 400, {"json": {"chat": {"history": {"messages": {"m": {"role": 5}}}}}}),
        (
            "POST",
            "/api/v1/chats/new",
            400,
            {"json": {"chat": {"history": {"messages": {"a": {"id": "same"}, "b": {"id": "same"}}}}}},
        ),
        ("POST", "/api/v1/notes/create", 422, {"json": {"title": NUL}}),
        (
            "POST",
            "/api/v1/notes/create",
            422,
            {"json": {"title": "t", "access_control": {"read": {"user_ids": [long_id]}}}},
        ),
        ("POST", f"/api/v1/notes/{nid}/update", 422, {"json": {"title": NUL}}),
        (
            "POST",
            f"/api/v1/notes/{nid}/access/update",
            422,
            {"json": {"access_control": {"write": {"user_ids": [long_id]}}}},
        ),
    ]


async def test_input_one_database_would_choke_on_is_refused_on_both(db_world: World) -> None:
    w = db_world
    cid = (await ok(w, w.admin, "POST", "/api/v1/channels/create", json={"name": "general"}))["id"]
    mid = (await ok(w, w.bob, "POST", f"/api/v1/channels/{cid}/messages/post", json={"content": "x"}))["id"]
    nid = (await ok(w, w.bob, "POST", "/api/v1/notes/create", json={"title": "n"}))["id"]
    for method, url, status, kwargs in bad_inputs(cid, mid, nid):
        body = await refused(w, w.bob, method, url, status, "invalid_payload", **kwargs)
        assert body["code"] == "invalid_payload", (url, body)
