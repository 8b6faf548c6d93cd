"""The server API over real HTTP and sockets: scopes, revocation on every process, publish (chat events
persisted), channels as the system, presence and disconnect, the audit log and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

import httpx
import pytest

from chatwire.client.server import ServerApiError, ServerClient
from chatwire.config import Settings
from tests.conftest import RunningServer, postgres_database, run_server
from tests.sio import RecordingClient


async def new_key(server: RunningServer, *scopes: str, name: str = "test") -> str:
    _record, key = await server.services.api_keys.create(name, list(scopes))
    return key


async def test_key_without_scope_is_refused_and_nothing_is_delivered(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    client = await RecordingClient(server.url).connect(ada["token"])
    presence_only = await new_key(server, "presence")
    try:
        async with ServerClient(server.url, presence_only) as api:
            with pytest.raises(ServerApiError) as info:
                await api.publish(f"user:{ada['id']}", "notice", {"n": 1})
            assert info.value.status == 403 and info.value.code == "forbidden"
            assert "publish" in str(info.value.detail)
            with pytest.raises(ServerApiError) as info:
                await api.create_channel("x")
            assert info.value.status == 403
            assert (await api.presence())["user_count"] == 1
        await client.expect_none("notice", wait=0.3)
        async with httpx.AsyncClient(base_url=server.url) as http:
            for headers in ({}, {"X-API-Key": "cwk_nope"}, {"Authorization": "Bearer " + ada["token"]}):
                r = await http.post(
                    "/api/v1/events/publish", json={"room": "user:x", "event": "e"}, headers=headers
                )
                assert r.status_code == 401 and r.json()["code"] == "unauthorized", headers
        admin = await new_key(server, "admin")
        async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": admin}) as http:
            r = await http.post(
                "/api/v1/events/publish",
                json={"room": f"user:{ada['id']}", "event": "notice", "data": {"n": 2}},
            )
            assert r.status_code == 200, r.text
        assert await client.wait_for("notice") == {"n": 2}
    finally:
        await client.close()


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
async def test_revoked_key_is_refused_at_once_on_every_process(settings: Settings, database: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        if database == "postgres":
            url = await stack.enter_async_context(postgres_database())
            settings = settings.model_copy(update={"database_url": url})
        one = await stack.enter_async_context(run_server(settings))
        two = await stack.enter_async_context(run_server(settings))
        key = await new_key(one, "presence")
        for server in (one, two):
            async with ServerClient(server.url, key) as api:
                assert (await api.presence())["users"] == []
        key_id = (await one.services.api_keys.list())[0]["id"]
        assert await two.services.api_keys.revoke(key_id)
        for server in (one, two):
            async with ServerClient(server.url, key) as api:
                with pytest.raises(ServerApiError) as info:
                    await api.presence()
                assert info.value.status == 401 and "revoked" in str(info.value.detail)
        assert not await one.services.api_keys.revoke(key_id)


async def two_tabs_and_a_publish_key(
    server: RunningServer,
) -> tuple[dict[str, Any], dict[str, Any], RecordingClient, RecordingClient, str]:
    """Ada and Bob, a joined tab each, and a `publish` key."""
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    a = await RecordingClient(server.url).connect(ada["token"])
    b = await RecordingClient(server.url).connect(bob["token"])
    return ada, bob, a, b, await new_key(server, "publish")


async def test_publish_to_rooms_and_chat_events_are_persisted(server: RunningServer) -> None:
    ada, bob, a, b, key = await two_tabs_and_a_publish_key(server)
    try:
        async with server.http(ada["token"]) as http:
            chat = (await http.post("/api/v1/chats/new", json={"chat": {"title": "t"}})).json()
        async with ServerClient(server.url, key) as api:
            await api.publish(f"user:{ada['id']}", "custom", {"hello": "ada"})
            for piece in ("Hel", "lo ", "world"):
                result = await api.chat_event(
                    ada["id"], chat["id"], "m1", "chat:message:delta", {"content": piece}
                )
                assert result == {"status": True, "persisted": True}
            await api.chat_event(ada["id"], chat["id"], "m1", "status", {"description": "done", "done": True})
            await api.chat_event(ada["id"], chat["id"], "m1", "chat:completion", {"done": True})
            with pytest.raises(ServerApiError) as info:  # bob's room, ada's chat
                await api.chat_event(bob["id"], chat["id"], "m1", "chat:message:delta", {"content": "x"})
            assert info.value.status == 404
            with pytest.raises(ServerApiError) as info:
                await api.publish("everyone", "custom", {})
            assert info.value.status == 400
            with pytest.raises(ServerApiError) as info:
                await api.publish(f"user:{ada['id']}", "disconnect", {})
            assert info.value.status == 400
        assert await a.wait_for("custom") == {"hello": "ada"}
        done = await a.wait_for("events", lambda p: p["data"]["type"] == "chat:completion")
        assert done["chat_id"] == chat["id"]
        deltas = [
            p["data"]["data"]["content"]
            for p in a.received["events"]
            if p["data"]["type"] == "chat:message:delta"
        ]
        assert deltas == ["Hel", "lo ", "world"]
        await b.expect_none("events", wait=0.2)
        await b.expect_none("custom", wait=0)
        async with server.http(ada["token"]) as http:
            stored = (await http.get(f"/api/v1/chats/{chat['id']}")).json()
        message = stored["chat"]["history"]["messages"]["m1"]
        assert (
            message["content"] == "Hello world" and message["done"] is True and message["role"] == "assistant"
        )
        assert message["statusHistory"] == [{"description": "done", "done": True}]
    finally:
        await a.close()
        await b.close()


async def test_publish_batch_reaches_each_room_in_order_and_a_bad_item_sends_nothing(
    server: RunningServer,
) -> None:
    ada, bob, a, b, key = await two_tabs_and_a_publish_key(server)
    try:
        async with server.http(ada["token"]) as http:
            chat = (await http.post("/api/v1/chats/new", json={"chat": {"title": "t"}})).json()
        async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": key}) as http:
            bad = [
                {"room": f"user:{ada['id']}", "event": "notice", "data": {"n": 0}},
                {"room": "everyone", "event": "notice", "data": {}},
            ]
            r = await http.post("/api/v1/events/publish/batch", json={"events": bad})
            assert r.status_code == 400, r.text
            foreign = [  # ada's chat published into bob's room: refused before anything is sent
                {"room": f"user:{ada['id']}", "event": "notice", "data": {"n": 0}},
                {
                    "room": f"user:{bob['id']}",
                    "event": "events",
                    "data": {"chat_id": chat["id"], "message_id": "m1", "data": {"type": "message"}},
                },
            ]
            r = await http.post("/api/v1/events/publish/batch", json={"events": foreign})
            assert r.status_code == 404, r.text
        delta = {"type": "chat:message:delta", "data": {"content": "hi"}}
        async with ServerClient(server.url, key) as api:
            sent = await api.publish_many(
                [
                    (f"user:{ada['id']}", "notice", {"n": 1}),
                    (f"user:{bob['id']}", "notice", {"n": 2}),
                    (f"user:{ada['id']}", "notice", {"n": 3}),
                    (
                        f"user:{ada['id']}",
                        "events",
                        {"chat_id": chat["id"], "message_id": "m1", "data": delta},
                    ),
                ]
            )
            assert sent == {"status": True, "published": 4, "persisted": 1}
        await a.wait_for("notice", lambda p: p["n"] == 3)
        await b.wait_for("notice", lambda p: p["n"] == 2)
        assert [p["n"] for p in a.received["notice"]] == [1, 3]  # nothing of the refused batches
        assert [p["n"] for p in b.received["notice"]] == [2]
        await server.services.writer.flush(chat["id"])
        async with server.http(ada["token"]) as http:
            stored = (await http.get(f"/api/v1/chats/{chat['id']}")).json()
        assert stored["chat"]["history"]["messages"]["m1"]["content"] == "hi"
    finally:
        await a.close()
        await b.close()


async def test_channels_as_system_presence_and_disconnect(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    a = await RecordingClient(server.url).connect(ada["token"])
    b = await RecordingClient(server.url).connect(bob["token"])
    key = await new_key(server, "channels", "presence")
    try:
        async with ServerClient(server.url, key) as api:
            channel = await api.create_channel("ops", type="group", user_ids=[ada["id"]])
            cid = channel["id"]
            await a.wait_for("events:channel", lambda p: p["channel_id"] == cid)
            assert (await api.get_channel(cid))["user_ids"] == [ada["id"]]
            await api.add_members(cid, [bob["id"]])
            await b.wait_for("events:channel", lambda p: p["channel_id"] == cid)
            online = await api.presence()
            rooms = {u["id"]: u["sessions"][0]["rooms"] for u in online["users"]}
            assert f"channel:{cid}" in rooms[bob["id"]] and f"user:{bob['id']}" in rooms[bob["id"]]
            await api.remove_members(cid, [bob["id"]])
            assert (await api.presence(bob["id"]))["users"][0]["sessions"][0]["rooms"] == [
                f"user:{bob['id']}"
            ]
            with pytest.raises(ServerApiError) as info:
                await api.add_members(cid, ["no-such-user"])
            assert info.value.status == 404
            carol = await api.ensure_user("carol-from-app", name="Carol")
            assert (carol["id"], carol["name"], carol["role"]) == ("carol-from-app@external", "Carol", "user")
            assert (await api.ensure_user("carol-from-app", name="Carol B."))["name"] == "Carol B."
            await api.add_members(cid, [carol["id"]])  # chatwire ids, as ensure_user returns them
            assert carol["id"] in (await api.get_channel(cid))["user_ids"]
            assert await api.disconnect_user(bob["id"]) == 1
            for _ in range(100):
                if not b.sio.connected:
                    break
                await asyncio.sleep(0.02)
            assert not b.sio.connected
            assert [u["id"] for u in (await api.presence())["users"]] == [ada["id"]]
            await api.delete_channel(cid)
            with pytest.raises(ServerApiError) as info:
                await api.get_channel(cid)
            assert info.value.status == 404
    finally:
        await a.close()
        await b.close()


async def test_every_call_is_audited(server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    key = await new_key(server, "presence", name="auditor")
    caplog.set_level(logging.INFO, logger="chatwire.audit")
    async with ServerClient(server.url, key) as api:
        await api.presence()
        with pytest.raises(ServerApiError):
            await api.publish("user:x", "e", {})
        assert await api.disconnect_user("nobody") == 0
    async with ServerClient(server.url, "cwk_unknown") as api:
        with pytest.raises(ServerApiError):
            await api.presence()
    lines = [r for r in caplog.records if r.name == "chatwire.audit"]
    seen = [
        (getattr(r, "scope", None), getattr(r, "outcome", None), getattr(r, "key_name", None)) for r in lines
    ]
    assert seen[0] == ("presence", "ok", "auditor")
    assert seen[1] == ("publish", "forbidden", "auditor")
    assert seen[2] == ("presence", "ok", "auditor") and getattr(lines[2], "target", None) == "user:nobody"
    assert seen[3] == ("presence", "unauthorized", None)
    assert all(getattr(r, "route", "").startswith(("GET /api", "POST /api")) for r in lines)


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return 0.0


async def test_metrics_report_the_traffic_of_this_test(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    async with httpx.AsyncClient(base_url=server.url) as http:
        before = (await http.get("/metrics")).text
    assert sample(before, "chatwire_sessions", transport="websocket") == 0
    a = await RecordingClient(server.url).connect(ada["token"])
    try:
        for _ in range(3):
            await a.call("heartbeat", {})
        bad = await a.call(
            "events:channel", {"channel_id": "nope", "data": {"type": "typing", "data": {"typing": True}}}
        )
        assert bad["error"]["code"] == "not_found"
        invalid: Any = await a.call("usage", {"model": ""})
        assert invalid["error"]["code"] == "invalid_payload"
        key = await new_key(server, "publish")
        async with ServerClient(server.url, key) as api:
            for i in range(4):
                await api.publish(f"user:{ada['id']}", "tick", {"i": i})
        await a.wait_for("tick", lambda p: p["i"] == 3)
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        text = r.text
        assert sample(text, "chatwire_sessions", transport="websocket") == 1
        assert sample(text, "chatwire_connections_total", transport="websocket") == 1
        assert sample(text, "chatwire_rooms", kind="user") == 1
        assert sample(text, "chatwire_events_in_total", event="heartbeat") == 3
        assert sample(text, "chatwire_events_in_total", event="user-join") == 1
        assert sample(text, "chatwire_events_rejected_total", event="events:channel", code="not_found") == 1
        assert sample(text, "chatwire_events_rejected_total", event="usage", code="invalid_payload") == 1
        # A published name outside the fixed label set counts as "other" (clients cannot grow the series).
        assert sample(text, "chatwire_events_out_total", event="other") == 4
        assert sample(text, "chatwire_events_out_total", event="tick") == 0
        assert sample(text, "chatwire_emit_seconds_count") >= 4
        assert sample(text, "chatwire_server_api_calls_total", scope="publish", outcome="ok") == 4
        assert sample(text, "chatwire_process_info") == 1
        for hook in ("chatwire_persistence_queue_depth", "chatwire_persistence_flush_seconds_count"):
            assert f"\n{hook} " in text
        assert "chatwire_redis_up " not in text  # no Redis configured: no sample
    finally:
        await a.close()
    for _ in range(100):
        async with httpx.AsyncClient(base_url=server.url) as http:
            after = (await http.get("/metrics")).text
        if sample(after, "chatwire_sessions", transport="websocket") == 0:
            break
        await asyncio.sleep(0.02)
    assert sample(after, "chatwire_disconnections_total") == 1
    assert sample(after, "chatwire_rooms", kind="user") == 0


async def test_redis_connectivity_metric(settings: Settings) -> None:
    import redis.asyncio as aioredis

    from tests.conftest import REDIS_URL, service_unavailable

    try:
        probe = aioredis.from_url(REDIS_URL)
        await probe.ping()
        await probe.aclose()
    except Exception as exc:
        service_unavailable("Redis", exc)
    async with run_server(settings.model_copy(update={"redis_url": REDIS_URL})) as up:
        async with httpx.AsyncClient(base_url=up.url) as http:
            text = (await http.get("/metrics")).text
        assert sample(text, "chatwire_redis_up") == 1
    async with run_server(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})) as down:
        async with httpx.AsyncClient(base_url=down.url) as http:
            text = (await http.get("/metrics")).text
        assert "chatwire_redis_up 0.0" in text


async def test_external_user_joins_open_channels_and_uses_rest_and_socket(settings: Settings) -> None:
    import time

    import jwt

    secret = "app-secret-" + "q" * 30
    external = settings.model_copy(
        update={"external_algorithms": ["HS256"], "external_secret": secret, "external_audience": "chatwire"}
    )
    async with run_server(external) as server:
        admin = await server.signup("Admin")
        async with server.http(admin["token"]) as http:
            lobby = (await http.post("/api/v1/channels/create", json={"name": "lobby"})).json()
        token = jwt.encode(
            {"sub": "u-77", "name": "Grace", "aud": "chatwire", "exp": int(time.time()) + 60},
            secret,
            algorithm="HS256",
        )
        client = await RecordingClient(server.url).connect(token)
        try:
            assert f"channel:{lobby['id']}" in await server.services.broker.rooms_of(client.sio.get_sid())
            async with server.http(token) as http:
                mine = (await http.get("/api/v1/channels/")).json()
                assert [c["id"] for c in mine] == [lobby["id"]]
                me = (await http.get("/api/v1/auths/")).json()
                assert (me["id"], me["name"]) == ("u-77@external", "Grace")
        finally:
            await client.close()
        wrong_aud = jwt.encode(
            {"sub": "u-78", "aud": "x", "exp": int(time.time()) + 60}, secret, algorithm="HS256"
        )
        refused = RecordingClient(server.url)
        with pytest.raises(Exception):  # noqa: B017 - python-socketio raises its ConnectionError
            await refused.connect(wrong_aud)
        assert refused.connect_error == {
            "message": "invalid token: wrong audience",
            "data": {"code": "unauthorized"},
        }
