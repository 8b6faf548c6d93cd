"""chatwire's Python SDK receives an event far over aiohttp's default websocket message limit (4 MiB) whole:
a 20 MB `chat:completion` with sources, rebuilt into the tracked chat exactly as sent."""

from __future__ import annotations

import random
import string

from chatwire.client import ChatwireClient
from chatwire.client.server import ServerClient
from chatwire.config import Settings
from tests.conftest import run_server


async def test_sdk_client_receives_a_20_mb_completion_whole(settings: Settings) -> None:
    roomy = settings.model_copy(update={"max_payload_bytes": 64 << 20})
    async with run_server(roomy) as server:
        ada = await server.signup("Ada")
        async with server.http(ada["token"]) as http:
            chat = (await http.post("/api/v1/chats/new", json={"chat": {"title": "RAG"}})).json()
        client = await ChatwireClient(server.url, ada["token"], reconnection=False).connect()
        try:
            client.track(chat["id"])
            rng = random.Random(7)
            sources = [
                {
                    "source": {"name": f"d{i}"},
                    "document": ["".join(rng.choices(string.ascii_letters, k=1 << 20))],
                }
                for i in range(20)
            ]
            _record, key = await server.services.api_keys.create("big", ["publish"])
            async with ServerClient(server.url, key, timeout=120) as api:
                await api.chat_event(
                    ada["id"],
                    chat["id"],
                    "m1",
                    "chat:completion",
                    {"done": True, "content": "ok", "sources": sources},
                )
            message = await client.wait_done(chat["id"], "m1", timeout=60)
            assert message["content"] == "ok"
            assert message["sources"] == sources
            assert client.sio.connected
        finally:
            await client.sio.disconnect()
