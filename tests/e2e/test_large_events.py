"""Events above the fleet payload limit (1 MiB) are delivered, whole and in order, on every process: a 20 MB
`chat:completion` with RAG sources reaches two tabs of one user on two processes (through the shared log, by
reference), and a 3 MB note event reaches editors on both (through the BlobStore)."""

from __future__ import annotations

import hashlib
import json
import random
import string
from pathlib import Path
from typing import Any

import pytest

from chatwire.client.server import ServerClient
from tests.integration.test_fleet import REDIS_URL, fleet_of, require_redis
from tests.nodeclient import NodeClient, node_or_skip
from tests.procs import json_of

pytestmark = pytest.mark.e2e

DIGEST_OVER = 100_000


def digest(payload: Any) -> dict[str, Any]:
    """What tests/node/client.mjs prints for a large event: JSON.stringify's bytes and their sha256."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return {"bytes": len(text), "sha256": hashlib.sha256(text).hexdigest()}


def sources(total_bytes: int, count: int) -> list[dict[str, Any]]:
    rng = random.Random(25975)
    alphabet = string.ascii_letters + string.digits + " .,"
    each = total_bytes // count
    return [
        {
            "source": {"id": f"doc{i}", "name": f"doc{i}.pdf"},
            "document": ["".join(rng.choices(alphabet, k=each))],
            "metadata": [{"source": f"doc{i}.pdf", "page": i}],
        }
        for i in range(count)
    ]


def position(tab: NodeClient, predicate: Any) -> int:
    for i, line in enumerate(tab.lines):
        if line["type"] == "event" and predicate(line):
            return i
    raise AssertionError("event not received")


async def test_a_20_mb_completion_reaches_two_tabs_on_two_processes_whole(tmp_path: Path) -> None:
    node_or_skip()
    await require_redis()
    env = {
        "CHATWIRE_MAX_PAYLOAD_BYTES": str(64 << 20)
    }  # the app's REST body may be large; the fleet limit is not
    async with fleet_of(2, tmp_path, REDIS_URL, extra_env=env) as fleet:
        ada = await fleet.signup("Ada")
        async with fleet.servers[0].http(ada["token"]) as http:
            chat = await json_of(await http.post("/api/v1/chats/new", json={"chat": {"title": "RAG"}}))
            note = await json_of(await http.post("/api/v1/notes/create", json={"title": "N", "data": {}}))
        tabs = [
            await NodeClient(server.url, ada["token"], digest_over=DIGEST_OVER).start()
            for server in fleet.servers
        ]
        try:
            for tab in tabs:
                assert (await tab.call("join-note", {"note_id": note["id"]}))["note_id"] == note["id"]
            key = fleet.api_key("publish")
            big: dict[str, Any] = {
                "done": True,
                "content": "The answer, with sources.",
                "sources": sources(20 << 20, 20),
            }
            async with ServerClient(fleet.servers[0].url, key, timeout=120) as api:
                await api.chat_event(
                    ada["id"], chat["id"], "m1", "chat:message:delta", {"content": "before "}
                )
                out = await api.chat_event(ada["id"], chat["id"], "m1", "chat:completion", big)
                assert out["persisted"] is True
                await api.chat_event(ada["id"], chat["id"], "m1", "chat:active", {"active": False})
                note_event = {"id": note["id"], "data": {"blob": "n" * (3 << 20)}}
                await api.publish(f"note:{note['id']}", "events:note", note_event)
            expected = digest(
                {"chat_id": chat["id"], "message_id": "m1", "data": {"type": "chat:completion", "data": big}}
            )
            assert expected["bytes"] > 20 << 20
            for tab in tabs:
                got = await tab.wait_event(
                    "events", lambda e: e.get("data", {}).get("type") == "chat:completion", timeout=90
                )
                assert got["digest"] == expected
                await tab.wait_event(
                    "events", lambda e: e.get("data", {}).get("type") == "chat:active", timeout=30
                )
                before = position(
                    tab,
                    lambda ln: (
                        ln["event"] == "events" and ln["args"][0]["data"]["type"] == "chat:message:delta"
                    ),
                )
                completion = position(tab, lambda ln: ln["event"] == "events" and "digest" in ln["args"][0])
                after = position(
                    tab, lambda ln: ln["event"] == "events" and ln["args"][0]["data"]["type"] == "chat:active"
                )
                assert before < completion < after
                noted = await tab.wait_event("events:note", lambda e: "digest" in e, timeout=60)
                assert noted["digest"] == digest(note_event)
            # The emitting process's writer stores the message; a read there waits for it (a consistent
            # snapshot). Another process reads the same database once that write has landed.
            async with fleet.servers[0].http(ada["token"]) as http:
                stored = await json_of(await http.get(f"/api/v1/chats/{chat['id']}"))
            message = stored["chat"]["history"]["messages"]["m1"]
            assert message["done"] is True and len(message["sources"]) == 20
            assert message["sources"][7] == big["sources"][7]
            async with fleet.servers[1].http(ada["token"]) as http:
                elsewhere = await json_of(await http.get(f"/api/v1/chats/{chat['id']}"))
            assert elsewhere["chat"]["history"]["messages"]["m1"] == message
        finally:
            for tab in tabs:
                await tab.close()
