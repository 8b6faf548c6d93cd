"""Generations end to end: the demo model, stop, event calls from the model, an OpenAI-compatible upstream.

The SDK client rebuilds each message from the stream; it must equal what the server stored.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from chatwire.client import ChatEvent, ChatwireClient
from chatwire.config import Settings
from chatwire.services.models import demo_answer
from tests.conftest import RunningServer, free_port, run_server

STORED_FIELDS = ("content", "statusHistory", "sources", "done", "usage", "error")


@pytest.fixture
async def fast(settings: Settings) -> AsyncIterator[RunningServer]:
    async with run_server(settings.model_copy(update={"demo_tokens_per_second": 0.0})) as running:
        yield running


async def setup_user(server: RunningServer, name: str = "Ada") -> tuple[dict[str, Any], str, ChatwireClient]:
    user = await server.signup(name)
    async with server.http(user["token"]) as http:
        r = await http.post("/api/v1/chats/new", json={"chat": {"title": "demo"}})
        chat_id = r.json()["id"]
    client = await ChatwireClient(server.url, user["token"], reconnection=False).connect()
    return user, chat_id, client


async def start(server: RunningServer, token: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    async with server.http(token) as http:
        r = await http.post("/api/chat/completions", json={"stream": True, **body})
        assert r.status_code == status, r.text
        return r.json()  # type: ignore[no-any-return]


async def ask_demo(
    server: RunningServer, token: str, chat_id: str, message_id: str, prompt: str
) -> dict[str, Any]:
    """Start a demo generation of `prompt` answered as `message_id` in `chat_id`."""
    body = {
        "model": "demo",
        "messages": [{"role": "user", "content": prompt}],
        "chat_id": chat_id,
        "id": message_id,
    }
    return await start(server, token, body)


async def stored(server: RunningServer, token: str, chat_id: str, message_id: str) -> dict[str, Any]:
    await server.services.writer.flush()
    async with server.http(token) as http:
        r = await http.get(f"/api/v1/chats/{chat_id}")
        return r.json()["chat"]["history"]["messages"][message_id]  # type: ignore[no-any-return]


def same_as_stored(rebuilt: dict[str, Any], row: dict[str, Any]) -> None:
    for key in STORED_FIELDS:
        assert rebuilt.get(key) == row.get(key), key


async def test_demo_generation_streams_and_persists_what_the_client_rebuilds(fast: RunningServer) -> None:
    user, chat_id, client = await setup_user(fast)
    seen: list[ChatEvent] = []
    client.on_event(seen.append)
    chat = client.track(chat_id)
    try:
        prompt = "Tell me about rooms in 300 words"
        out = await start(
            fast,
            user["token"],
            {
                "model": "demo",
                "messages": [{"role": "user", "content": prompt}],
                "chat_id": chat_id,
                "id": "a1",
                "session_id": client.sid,
            },
        )
        assert out["status"] is True and out["task_id"] and out["message_id"] == "a1"
        rebuilt = await client.wait_done(chat_id, "a1")
        assert rebuilt["content"] == "".join(demo_answer(prompt))
        assert len(rebuilt["content"].split()) == 300
        assert rebuilt["statusHistory"][0]["description"] == "Reading the question"
        assert rebuilt["sources"][0]["source"]["name"] == "chatwire README"
        assert rebuilt["usage"]["completion_tokens"] == 300
        await client.wait_for(lambda: any(e.type == "chat:active" and not e.data["active"] for e in seen))
        # The turn first (the stored question and the empty answer), then the generation.
        assert seen[0].type == "chat:messages" and seen[0].data["currentId"] == "a1"
        question = next(m for m in seen[0].data["messages"].values() if m["role"] == "user")
        assert question["content"] == prompt and seen[0].data["messages"]["a1"]["parentId"] == question["id"]
        assert seen[1].type == "chat:active" and seen[1].data == {"active": True}
        row = await stored(fast, user["token"], chat_id, "a1")
        assert row["parentId"] == question["id"] and row["model"] == "demo" and row["outcome"] == "done"
        same_as_stored(rebuilt, row)
        assert chat.messages["a1"] is rebuilt
    finally:
        await client.close()


@pytest.mark.parametrize("coalesce_ms", [50, 0])
async def test_fast_tokens_reach_the_tabs_in_fewer_events_with_the_same_text(
    settings: Settings, coalesce_ms: int
) -> None:
    """A model faster than the coalescing window: its deltas arrive merged (one event per window, the text whole
    and in order, the status and final events after the text before them); with the window at 0, one per token."""
    update = {"demo_tokens_per_second": 1000.0, "completion_coalesce_ms": coalesce_ms}
    async with run_server(settings.model_copy(update=update)) as server:
        user, chat_id, client = await setup_user(server)
        seen: list[ChatEvent] = []
        client.on_event(lambda e: seen.append(e) if e.message_id == "c1" else None)
        try:
            prompt = "Tell me about windows in 200 words"
            await ask_demo(server, user["token"], chat_id, "c1", prompt)
            rebuilt = await client.wait_done(chat_id, "c1")
            await client.wait_for(lambda: any(e.type == "chat:active" and not e.data["active"] for e in seen))
            deltas = [e.data["content"] for e in seen if e.type == "chat:message:delta"]
            full = "".join(demo_answer(prompt))
            assert "".join(deltas) == rebuilt["content"] == full
            if coalesce_ms:
                # 200 tokens over ~0.2 s at one event per 50 ms: a handful of events, each of several tokens.
                assert 2 <= len(deltas) <= 40, len(deltas)
            else:
                assert len(deltas) == 200
            kinds = [e.type for e in seen]
            last_delta = max(i for i, k in enumerate(kinds) if k == "chat:message:delta")
            finished = next(
                i for i, e in enumerate(seen) if e.type == "chat:completion" and e.data.get("done")
            )
            assert kinds.index("status") < kinds.index("chat:message:delta") and finished > last_delta
            same_as_stored(rebuilt, await stored(server, user["token"], chat_id, "c1"))
        finally:
            await client.close()


async def test_the_writer_starts_from_the_stored_turn_without_reading_the_answer_back(
    fast: RunningServer,
) -> None:
    """The answer row add_turn stored is where the message writer starts: no read of it before the first write,
    and what is stored is still exactly what was streamed."""
    from tests.integration.test_auth_cache import statements

    user, chat_id, client = await setup_user(fast)
    try:
        prompt = "Tell me about writers in 50 words"
        with statements(fast, "from chat_messages") as reads:
            await ask_demo(fast, user["token"], chat_id, "a2", prompt)
            before = len(reads)  # the turn's own reads (the chat's messages)
            rebuilt = await client.wait_done(chat_id, "a2")
            await fast.services.writer.flush()
            assert reads[before:] == []
        row = await stored(fast, user["token"], chat_id, "a2")
        assert rebuilt["content"] == row["content"] == "".join(demo_answer(prompt))
        same_as_stored(rebuilt, row)
    finally:
        await client.close()


async def test_an_emitter_reusing_its_event_dict_stores_what_it_sent(fast: RunningServer) -> None:
    """A tool that refills one dict for every event: each emit is queued as it was at the call."""
    user, chat_id, client = await setup_user(fast)
    try:
        info = {"user_id": user["id"], "chat_id": chat_id, "message_id": "r1"}
        emit = fast.services.events.get_event_emitter(info)
        event: dict[str, Any] = {}
        for piece in ("one ", "two ", "three"):
            event["type"], event["data"] = "chat:message:delta", {"content": piece}
            await emit(event)
        event["type"], event["data"] = "chat:completion", {"done": True}
        await emit(event)
        rebuilt = await client.wait_done(chat_id, "r1")
        row = await stored(fast, user["token"], chat_id, "r1")
        assert rebuilt["content"] == row["content"] == "one two three" and row["done"] is True
    finally:
        await client.close()


async def test_stop_cancels_and_stored_equals_streamed(settings: Settings) -> None:
    async with run_server(settings.model_copy(update={"demo_tokens_per_second": 200.0})) as server:
        user, chat_id, client = await setup_user(server)
        eve = await server.signup("Eve")
        client.track(chat_id)
        try:
            out = await start(
                server,
                user["token"],
                {
                    "model": "demo",
                    "messages": [{"role": "user", "content": "go on for 5000 tokens"}],
                    "chat_id": chat_id,
                    "id": "a1",
                },
            )
            state = client.track(chat_id)
            await client.wait_for(lambda: len(state.messages.get("a1", {}).get("content", "")) > 50)
            async with server.http(eve["token"]) as http:
                assert (await http.post(f"/api/tasks/stop/{out['task_id']}")).status_code == 404
            async with server.http(user["token"]) as http:
                r = await http.get(f"/api/tasks/chat/{chat_id}")
                assert r.json()["task_ids"] == [out["task_id"]]
                r = await http.post(f"/api/tasks/stop/{out['task_id']}")
                assert r.status_code == 200 and r.json()["status"] is True
                assert (await http.post(f"/api/tasks/stop/{out['task_id']}")).status_code == 404
            rebuilt = await client.wait_done(chat_id, "a1", timeout=10)
            full = "".join(demo_answer("go on for 5000 tokens"))
            assert 0 < len(rebuilt["content"]) < len(full) and full.startswith(rebuilt["content"])
            same_as_stored(rebuilt, await stored(server, user["token"], chat_id, "a1"))
        finally:
            await client.close()


@pytest.mark.parametrize("confirm", [True, False])
async def test_demo_asks_for_confirmation_through_an_event_call(fast: RunningServer, confirm: bool) -> None:
    user, chat_id, client = await setup_user(fast)
    asked: list[ChatEvent] = []

    def answer(event: ChatEvent) -> bool:
        asked.append(event)
        return confirm

    client.on_call("confirmation", answer)
    client.track(chat_id)
    try:
        await start(
            fast,
            user["token"],
            {
                "model": "demo",
                "messages": [{"role": "user", "content": "please confirm before the lookup"}],
                "chat_id": chat_id,
                "id": "a1",
                "session_id": client.sid,
            },
        )
        rebuilt = await client.wait_done(chat_id, "a1")
        assert len(asked) == 1 and asked[0].message_id == "a1" and asked[0].data["title"]
        if confirm:
            assert rebuilt["sources"] and rebuilt["content"].startswith("You asked about")
        else:
            assert "not confirmed" in rebuilt["content"] and not rebuilt.get("sources")
        same_as_stored(rebuilt, await stored(fast, user["token"], chat_id, "a1"))
    finally:
        await client.close()


async def test_demo_input_call_and_refusals(fast: RunningServer) -> None:
    user, chat_id, client = await setup_user(fast)
    bob, _, bob_client = await setup_user(fast, "Bob")
    client.on_call("input", lambda _event: "Zoe")
    client.track(chat_id)
    try:
        body = {
            "model": "demo",
            "messages": [{"role": "user", "content": "ask me my name"}],
            "chat_id": chat_id,
            "id": "a1",
            "session_id": client.sid,
        }
        await start(fast, user["token"], body)
        rebuilt = await client.wait_done(chat_id, "a1")
        assert rebuilt["content"].startswith("Hello Zoe, ")
        # Another user's session, another user's chat, an unknown model, no messages: refused.
        await start(fast, user["token"], {**body, "id": "a2", "session_id": bob_client.sid}, status=403)
        await start(fast, bob["token"], {**body, "id": "a3", "session_id": None}, status=404)
        await start(fast, user["token"], {**body, "model": "gpt-x"}, status=404)
        await start(fast, user["token"], {**body, "messages": []}, status=400)  # nor user_message
        async with fast.http(user["token"]) as http:
            models = (await http.get("/api/models")).json()["data"]
        assert [m["id"] for m in models] == ["demo"]
    finally:
        await client.close()
        await bob_client.close()


class FakeOpenAI:
    """A tiny OpenAI-compatible server on loopback: a peer speaking the upstream protocol."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.completions)
        self.runner = web.AppRunner(app)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": "tiny", "object": "model", "owned_by": "me"}]}
        )

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.auth.append(request.headers.get("Authorization"))
        if body["model"] != "tiny":
            return web.json_response({"error": {"message": "no such model"}}, status=404)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in ["Hi", " there", ", ", "upstream", "!"]:
            chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await asyncio.sleep(0.01)
        usage = {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}}
        await response.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
        return response

    async def __aenter__(self) -> FakeOpenAI:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.runner.cleanup()


async def test_openai_compatible_upstream(settings: Settings) -> None:
    async with FakeOpenAI() as upstream:
        configured = settings.model_copy(
            update={"openai_base_url": f"http://127.0.0.1:{upstream.port}/v1", "openai_api_key": "sk-test"}
        )
        async with run_server(configured) as server:
            user, chat_id, client = await setup_user(server)
            client.track(chat_id)
            try:
                async with server.http(user["token"]) as http:
                    models = (await http.get("/api/models")).json()["data"]
                assert [m["id"] for m in models] == ["demo", "tiny"]
                messages = [{"role": "user", "content": "hello"}]
                await start(
                    server,
                    user["token"],
                    {"model": "tiny", "messages": messages, "chat_id": chat_id, "id": "a1"},
                )
                rebuilt = await client.wait_done(chat_id, "a1")
                assert rebuilt["content"] == "Hi there, upstream!"
                assert rebuilt["usage"]["total_tokens"] == 7
                assert upstream.requests[0]["messages"] == messages and upstream.requests[0]["stream"] is True
                assert upstream.auth[0] == "Bearer sk-test"
                same_as_stored(rebuilt, await stored(server, user["token"], chat_id, "a1"))
                # An upstream error ends the message with the error, stored too.
                await start(
                    server,
                    user["token"],
                    {"model": "huge", "messages": messages, "chat_id": chat_id, "id": "a2"},
                )
                failed = await client.wait_done(chat_id, "a2")
                assert "404" in failed["error"]["content"]
                same_as_stored(failed, await stored(server, user["token"], chat_id, "a2"))
            finally:
                await client.close()


async def test_new_tab_opened_mid_generation_shows_the_whole_answer(settings: Settings) -> None:
    """Issue 6's new-tab catch-up during a real demo generation: the REST read (with `stream_offset`) plus
    `user-join {since}` gives the new tab exactly the answer the first tab and the database end with."""
    async with run_server(settings.model_copy(update={"demo_tokens_per_second": 150.0})) as server:
        user, chat_id, first = await setup_user(server)
        first_state = first.track(chat_id)
        prompt = "tell me about offsets in 400 tokens"
        try:
            await start(
                server,
                user["token"],
                {
                    "model": "demo",
                    "messages": [{"role": "user", "content": prompt}],
                    "chat_id": chat_id,
                    "id": "a1",
                    "session_id": first.sid,
                },
            )
            await first.wait_for(lambda: len(first_state.messages.get("a1", {}).get("content", "")) > 100)
            async with server.http(user["token"]) as http:
                chat = (await http.get(f"/api/v1/chats/{chat_id}")).json()
            snapshot = chat["chat"]["history"]["messages"]["a1"]
            assert 0 < len(snapshot["content"]) and not snapshot["done"]  # really mid-generation

            # The new tab starts from the REST snapshot and applies what the stream gives after its offset.
            tab = ChatwireClient(server.url, user["token"], reconnection=False)
            state = tab.track(chat_id)
            state.messages["a1"] = {**snapshot}
            await tab.sio.connect(server.url, socketio_path="ws/socket.io", transports=["websocket"])
            ack = await tab.sio.call(
                "user-join", {"auth": {"token": user["token"]}, "since": chat["stream_offset"]}, timeout=10
            )
            assert isinstance(ack.get("caught_up"), int), ack
            try:
                rebuilt = await tab.wait_done(chat_id, "a1", timeout=30)
                full = await first.wait_done(chat_id, "a1", timeout=30)
                assert rebuilt["content"] == full["content"] == "".join(demo_answer(prompt))
                same_as_stored(rebuilt, await stored(server, user["token"], chat_id, "a1"))
            finally:
                await tab.close()
        finally:
            await first.close()
