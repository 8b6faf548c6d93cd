"""The chat event pipeline end to end in one process: emitters, tabs, database, event calls, REST emit."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from chatwire.config import Settings
from chatwire.db.engine import Database
from chatwire.db.repos.chats import ChatRepo
from tests.conftest import RunningServer, run_server
from tests.sio import RecordingClient


async def new_chat(server: RunningServer, token: str, title: str = "t") -> str:
    async with server.http(token) as http:
        r = await http.post("/api/v1/chats/new", json={"chat": {"title": title}})
        r.raise_for_status()
        return str(r.json()["id"])


async def stored_message(server: RunningServer, token: str, chat_id: str, message_id: str) -> dict[str, Any]:
    async with server.http(token) as http:
        r = await http.get(f"/api/v1/chats/{chat_id}")
        r.raise_for_status()
        return r.json()["chat"]["history"]["messages"][message_id]  # type: ignore[no-any-return]


def of_message(message_id: str) -> Any:
    return lambda p: p.get("message_id") == message_id


def is_done(message_id: str) -> Any:
    return lambda p: (
        p.get("message_id") == message_id
        and p["data"]["type"] == "chat:completion"
        and p["data"]["data"].get("done")
    )


def deltas(client: RecordingClient, message_id: str) -> list[str]:
    return [
        p["data"]["data"]["content"]
        for p in client.received["events"]
        if p.get("message_id") == message_id and p["data"]["type"] == "chat:message:delta"
    ]


async def test_three_emitters_three_tabs_5000_deltas_agree_with_database(server: RunningServer) -> None:
    user = await server.signup("Ada")
    chat_id = await new_chat(server, user["token"])
    tabs = [await RecordingClient(server.url).connect(user["token"]) for _ in range(3)]
    try:
        message_id = "m-5000"
        info = {"user_id": user["id"], "chat_id": chat_id, "message_id": message_id}
        emitters = [server.services.events.get_event_emitter(info) for _ in range(3)]
        total = 5000

        async def stream(k: int) -> None:
            for i in range(k, total, 3):
                await emitters[k]({"type": "chat:message:delta", "data": {"content": f"<{k}:{i}>"}})
                if i % 97 == 0:
                    await asyncio.sleep(0)

        await asyncio.gather(*(stream(k) for k in range(3)))
        await emitters[0]({"type": "chat:completion", "data": {"done": True}})
        for tab in tabs:
            await tab.wait_for("events", is_done(message_id), timeout=60)
        # A tab that falls behind on a loaded machine may get runs of deltas merged (the slow-reader rule), so the
        # tabs are compared on the text they rebuilt, token by token.
        seen = ["".join(deltas(tab, message_id)) for tab in tabs]
        assert seen[0] == seen[1] == seen[2]
        tokens = [(int(k), int(i)) for k, i in re.findall(r"<(\d):(\d+)>", seen[0])]
        assert len(tokens) == total and "".join(f"<{k}:{i}>" for k, i in tokens) == seen[0]
        # Each emitter's own events keep their order, and the three streams really interleaved.
        for k in range(3):
            assert [i for kk, i in tokens if kk == k] == list(range(k, total, 3))
        assert tokens != sorted(tokens)
        await server.services.writer.flush()
        stored = await stored_message(server, user["token"], chat_id, message_id)
        assert stored["content"] == seen[0]
        assert stored["done"] is True
        # Coalesced: far fewer writes than events.
        assert server.services.writer.stats.writes < total / 10
    finally:
        for tab in tabs:
            await tab.close()


async def test_rest_emit_is_delivered_and_persisted_like_any_event(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    chat_id = await new_chat(server, ada["token"])
    tab = await RecordingClient(server.url).connect(ada["token"])
    bob_tab = await RecordingClient(server.url).connect(bob["token"])
    try:
        url = f"/api/v1/chats/{chat_id}/messages/m1/event"
        async with server.http(ada["token"]) as http:
            for event in (
                {"type": "status", "data": {"description": "working", "done": False}},
                {"type": "message", "data": {"content": "Hel"}},
                {"type": "message", "data": {"content": "lo"}},
                {"type": "source", "data": {"source": {"name": "doc"}, "document": ["x"]}},
                {"type": "source", "data": {"type": "code_execution", "id": "c1"}},
                {"type": "embeds", "data": {"embeds": ["<a>", "<b>"]}},
                {"type": "embeds", "data": {"embeds": ["<b>", "<c>"]}},
                {"type": "chat:completion", "data": {"done": True, "usage": {"total_tokens": 3}}},
            ):
                r = await http.post(url, json=event)
                assert r.status_code == 200 and r.json() is True, r.text
            bad = await http.post(url, json={"data": {}})
            assert bad.status_code == 422
        async with server.http(bob["token"]) as http:
            r = await http.post(url, json={"type": "message", "data": {"content": "intruder"}})
            assert r.status_code == 404
        await tab.wait_for("events", is_done("m1"))
        await server.services.writer.flush()
        stored = await stored_message(server, ada["token"], chat_id, "m1")
        assert stored["content"] == "Hello"
        assert stored["statusHistory"] == [{"description": "working", "done": False}]
        assert stored["sources"] == [{"source": {"name": "doc"}, "document": ["x"]}]
        assert stored["embeds"] == ["<a>", "<b>", "<c>"]
        assert stored["usage"] == {"total_tokens": 3} and stored["done"] is True
        await bob_tab.expect_none("events", of_message("m1"), wait=0.2)
    finally:
        await tab.close()
        await bob_tab.close()


async def test_local_and_temporary_chats_are_delivered_not_persisted(server: RunningServer) -> None:
    user = await server.signup("Ada")
    tab = await RecordingClient(server.url).connect(user["token"])
    try:
        for chat_id in ("local:abc", "temporary:xyz"):
            emit = server.services.events.get_event_emitter(
                {"user_id": user["id"], "chat_id": chat_id, "message_id": "m"}
            )
            await emit({"type": "message", "data": {"content": "hi"}})
            await tab.wait_for("events", lambda p, c=chat_id: p["chat_id"] == c)
        assert server.services.writer.stats.events == 0
        assert server.services.writer.active() == 0
    finally:
        await tab.close()


async def test_event_call_answers_and_refuses(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    tab = await RecordingClient(server.url).connect(ada["token"])
    bob_tab = await RecordingClient(server.url).connect(bob["token"])

    @tab.sio.on("events")
    async def answer(data: Any, *_: Any) -> Any:
        if data["data"]["type"] == "confirmation":
            return True
        if data["data"]["type"] == "input":
            await asyncio.sleep(5)  # never in time
        return None

    try:
        events = server.services.events
        sid = tab.sio.get_sid()
        call = events.get_event_call(
            {"user_id": ada["id"], "chat_id": "c", "message_id": "m", "session_id": sid}
        )
        assert await call({"type": "confirmation", "data": {"title": "ok?", "message": "?"}}) is True
        assert "error" in await call({"type": "input", "data": {"title": "name"}}, timeout=0.3)
        # Bob's session cannot be asked on Ada's behalf; nothing is sent to it.
        foreign = events.get_event_call(
            {"user_id": ada["id"], "chat_id": "c", "message_id": "m", "session_id": bob_tab.sio.get_sid()}
        )
        assert await foreign({"type": "confirmation", "data": {}}) == {
            "error": "session belongs to another user"
        }
        await bob_tab.expect_none("events", wait=0.2)
        gone = events.get_event_call(
            {"user_id": ada["id"], "chat_id": "c", "message_id": "m", "session_id": "no-such-sid"}
        )
        assert await gone({"type": "confirmation", "data": {}}) == {"error": "session gone"}
        # A tab that closes while a call waits answers at once, not after the timeout.
        pending = asyncio.create_task(call({"type": "input", "data": {"title": "name"}}, timeout=30))
        await asyncio.sleep(0.2)
        await tab.close()
        assert await asyncio.wait_for(pending, 5) == {"error": "session gone"}
        assert await call({"type": "confirmation", "data": {}}) == {"error": "session gone"}
    finally:
        await tab.close()
        await bob_tab.close()


async def test_server_shutdown_flushes_queued_events(settings: Settings) -> None:
    slow = settings.model_copy(update={"persist_flush_interval": 3600.0})
    async with run_server(slow) as server:
        user = await server.signup("Ada")
        chat_id = await new_chat(server, user["token"])
        emit = server.services.events.get_event_emitter(
            {"user_id": user["id"], "chat_id": chat_id, "message_id": "m"}
        )
        for i in range(20):
            await emit({"type": "message", "data": {"content": f"{i} "}})
        assert server.services.writer.stats.writes == 0
    db = Database(slow.resolved_database_url)
    try:
        row = await ChatRepo(db).get_message(chat_id, "m")
        assert row is not None and row.content == "".join(f"{i} " for i in range(20))
    finally:
        await db.close()


async def test_sdk_rebuilds_exactly_what_the_server_stores(server: RunningServer) -> None:
    import random

    from chatwire.client import ChatwireClient

    user = await server.signup("Ada")
    chat_id = await new_chat(server, user["token"])
    client = await ChatwireClient(server.url, user["token"], reconnection=False).connect()
    chat = client.track(chat_id)
    rng = random.Random(7)
    makers = [
        lambda: {"type": "message", "data": {"content": f"w{rng.randint(0, 99)} "}},
        lambda: {"type": "chat:message:delta", "data": {"content": "é✓ "}},
        lambda: {"type": "replace", "data": {"content": f"R{rng.randint(0, 9)}"}},
        lambda: {
            "type": "status",
            "data": {"description": f"s{rng.randint(0, 9)}", "done": rng.random() < 0.5},
        },
        lambda: {"type": "embeds", "data": {"embeds": [f"<e{rng.randint(0, 4)}>"]}},
        lambda: {"type": "chat:message:files", "data": {"files": [{"id": f"f{rng.randint(0, 3)}"}]}},
        lambda: {"type": "citation", "data": {"source": {"name": f"n{rng.randint(0, 9)}"}}},
        lambda: {"type": "source", "data": {"type": "code_execution", "id": "x"}},
        lambda: {"type": "chat:message:error", "data": {"error": {"content": "oops"}}},
        lambda: {"type": "chat:message:follow_ups", "data": {"follow_ups": [f"q{rng.randint(0, 9)}"]}},
        lambda: {"type": "chat:completion", "data": {"usage": {"n": rng.randint(0, 9)}}},
        lambda: {"type": "chat:title", "data": f"Title {rng.randint(0, 9)}"},
        lambda: {"type": "notification", "data": {"type": "info", "content": "hi"}},
    ]
    try:
        emitters = {
            mid: server.services.events.get_event_emitter(
                {"user_id": user["id"], "chat_id": chat_id, "message_id": mid}
            )
            for mid in ("m1", "m2")
        }
        for _ in range(400):
            await emitters[rng.choice(["m1", "m2"])](rng.choice(makers)())
        for emit in emitters.values():
            await emit({"type": "chat:completion", "data": {"done": True}})
        for mid in emitters:
            await client.wait_done(chat_id, mid)
        await server.services.writer.flush()
        async with server.http(user["token"]) as http:
            body = (await http.get(f"/api/v1/chats/{chat_id}")).json()
        for mid in emitters:
            stored = body["chat"]["history"]["messages"][mid]
            for key in (
                "content",
                "statusHistory",
                "sources",
                "files",
                "embeds",
                "followUps",
                "error",
                "usage",
                "done",
            ):
                assert chat.messages[mid].get(key) == stored.get(key), (mid, key)
        assert chat.title == body["title"]
    finally:
        await client.close()


async def test_python_sdk_server_to_server_emit(server: RunningServer) -> None:
    from chatwire.client import ChatwireClient, ChatwireHTTP

    user = await server.signup("Ada", email="ada-sdk@example.com", password="pw-sdk-secret")
    async with ChatwireHTTP(server.url) as http:
        await http.signin("ada-sdk@example.com", "pw-sdk-secret")
        chat_id = (await http.new_chat("from a backend"))["id"]
        tab = await ChatwireClient(server.url, user["token"], reconnection=False).connect()
        chat = tab.track(chat_id)
        try:
            assert await http.emit_event(chat_id, "m1", "status", {"description": "indexing", "done": False})
            assert await http.emit_event(chat_id, "m1", "chat:message:delta", {"content": "from "})
            assert await http.emit_event(chat_id, "m1", "chat:message:delta", {"content": "Go"})
            assert await http.emit_event(chat_id, "m1", "chat:completion", {"done": True})
            rebuilt = await tab.wait_done(chat_id, "m1")
            await server.services.writer.flush()
            stored = (await http.get_chat(chat_id))["chat"]["history"]["messages"]["m1"]
            assert rebuilt["content"] == stored["content"] == "from Go"
            assert chat.messages["m1"]["statusHistory"] == stored["statusHistory"]
        finally:
            await tab.close()


async def test_metrics_report_persistence_writes_and_the_event_log(settings: Settings) -> None:
    async with run_server(settings.model_copy(update={"persist_flush_interval": 60.0})) as server:
        await check_persistence_metrics(server)


async def check_persistence_metrics(server: RunningServer) -> None:
    import httpx

    from tests.integration.test_server_api import sample

    user = await server.signup("Ada")
    chat_id = await new_chat(server, user["token"])
    info = {"user_id": user["id"], "chat_id": chat_id, "message_id": "m-metrics"}
    emit = server.services.events.get_event_emitter(info)
    async with httpx.AsyncClient(base_url=server.url) as http:
        before = (await http.get("/metrics")).text
        assert sample(before, "chatwire_persistence_flush_seconds_count") == 0
        for piece in ("a", "b", "c"):
            await emit({"type": "chat:message:delta", "data": {"content": piece}})
        queued = (await http.get("/metrics")).text
        assert sample(queued, "chatwire_persistence_queue_depth") == 3  # nothing written before the timer
        await emit({"type": "chat:completion", "data": {"done": True}})
        await server.services.writer.flush()
        after = (await http.get("/metrics")).text
    assert sample(after, "chatwire_persistence_flush_seconds_count") >= 1
    assert sample(after, "chatwire_persistence_queue_depth") == 0
    assert sample(after, "chatwire_event_log_entries") >= 4
