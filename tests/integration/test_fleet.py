"""Fleet mode for real: three chatwire processes sharing Redis and PostgreSQL, clients spread over them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import socketio

from chatwire.backends.redis_client import RedisTarget
from chatwire.config import Settings
from tests.conftest import REDIS_URL, postgres_database, run_server, service_unavailable
from tests.procs import RedisProcess, ServerProcess, json_of
from tests.sio import RecordingClient

PRESENCE_TTL = 2.0

pytestmark = pytest.mark.e2e


@dataclass
class Fleet:
    servers: list[ServerProcess]
    redis_url: str
    prefix: str
    env: dict[str, str]
    cluster: bool = False

    def redis(self) -> Any:
        """A client of the fleet's Redis (a cluster client on a cluster)."""
        return RedisTarget(self.redis_url, cluster=self.cluster).client()

    def session_key(self, name: str) -> str:
        """The raw key of the session store's `name` (hash-tagged `{s}` on a cluster)."""
        return self.prefix + ("{s}:" if self.cluster else "") + name

    async def signup(self, name: str, via: int = 0) -> dict[str, Any]:
        async with self.servers[via].http() as http:
            return await json_of(
                await http.post(
                    "/api/v1/auths/signup",
                    json={
                        "name": name,
                        "email": f"{name.lower()}-{uuid.uuid4().hex[:6]}@example.com",
                        "password": "pw-xxxxxxxx",
                    },
                )
            )

    async def client(self, via: int, token: str) -> RecordingClient:
        return await RecordingClient(self.servers[via].url).connect(token)

    def api_key(self, *scopes: str) -> str:
        """A server API key, made with the CLI against the fleet's database."""
        argv = [sys.executable, "-m", "chatwire", "keys", "create", "--name", "test"]
        for scope in scopes:
            argv += ["--scope", scope]
        out = subprocess.run(argv, env={**os.environ, **self.env}, capture_output=True, text=True, check=True)
        return out.stdout.strip().splitlines()[-1]


async def require_redis() -> None:
    """Skip locally, fail in CI, when the shared Redis does not answer."""
    probe = aioredis.Redis.from_url(REDIS_URL)
    try:
        await probe.ping()
    except Exception as exc:
        service_unavailable("Redis", exc)
    finally:
        await probe.aclose()


@contextlib.asynccontextmanager
async def fleet_of(
    n: int,
    tmp_path: Path,
    redis_url: str,
    cluster: bool = False,
    extra_env: dict[str, str] | None = None,
) -> AsyncIterator[Fleet]:
    prefix = f"cwfleet:{uuid.uuid4().hex[:8]}:"
    async with postgres_database() as db_url:
        env = {
            "CHATWIRE_REDIS_URL": redis_url,
            "CHATWIRE_REDIS_CLUSTER": "true" if cluster else "false",
            "CHATWIRE_REDIS_PREFIX": prefix,
            "CHATWIRE_DATABASE_URL": db_url,
            "CHATWIRE_JWT_SECRET": "fleet-secret",
            "CHATWIRE_PRESENCE_TTL_SECONDS": str(PRESENCE_TTL),
            "CHATWIRE_USAGE_TTL_SECONDS": "1",
            **(extra_env or {}),
        }
        servers = [ServerProcess(tmp_path / f"p{i}", env, name=f"p{i}") for i in range(n)]
        try:
            # Generous start deadlines: on a loaded 2-core CI machine three processes migrating and starting take
            # well over the default 30 s now and then.
            await servers[0].start(timeout=90)  # the first one migrates the shared database
            await asyncio.gather(*(s.start(timeout=90) for s in servers[1:]))
            yield Fleet(servers, redis_url, prefix, env, cluster)
        finally:
            for s in servers:
                s.stop()
            client: Any = RedisTarget(redis_url, cluster=cluster).client()
            with contextlib.suppress(Exception):
                async for key in client.scan_iter(match=prefix + "*"):
                    await client.delete(key)
            await client.aclose()


@pytest.fixture(params=["redis", "cluster"])
async def fleet_redis(request: pytest.FixtureRequest) -> tuple[str, bool]:
    """The Redis a fleet test runs on: the shared Redis, and a private three-node Redis Cluster."""
    if request.param == "cluster":
        return request.getfixturevalue("redis_cluster"), True
    await require_redis()
    return REDIS_URL, False


@pytest.fixture
async def fleet(tmp_path: Path, fleet_redis: tuple[str, bool]) -> AsyncIterator[Fleet]:
    async with fleet_of(3, tmp_path, *fleet_redis) as f:
        yield f


def message_with(content: str) -> Any:
    return lambda p: p["data"]["type"] == "message" and p["data"]["data"]["content"] == content


def of(kind: str, channel_id: str) -> Any:
    return lambda p: p["data"]["type"] == kind and p["channel_id"] == channel_id


async def test_channel_events_and_membership_cross_processes(fleet: Fleet) -> None:
    ada, bob, cy = await fleet.signup("Ada"), await fleet.signup("Bob", 1), await fleet.signup("Cy", 2)
    a, b, c = (
        await fleet.client(0, ada["token"]),
        await fleet.client(1, bob["token"]),
        await fleet.client(2, cy["token"]),
    )
    try:
        async with fleet.servers[0].http(ada["token"]) as http:
            channel = await json_of(
                await http.post(
                    "/api/v1/channels/create",
                    json={"name": "ops", "type": "group", "user_ids": [bob["id"], cy["id"]]},
                )
            )
        cid = channel["id"]
        # Sessions on processes 1 and 2 entered the room created on process 0.
        await b.wait_for("events:channel", of("channel:created", cid))
        await c.wait_for("events:channel", of("channel:created", cid))

        async with fleet.servers[1].http(bob["token"]) as http:
            await json_of(
                await http.post(f"/api/v1/channels/{cid}/messages/post", json={"content": "from p1"})
            )
        for client in (a, b, c):
            got = await client.wait_for("events:channel", of("message", cid))
            assert got["data"]["data"]["content"] == "from p1"

        ack = await c.call(
            "events:channel", {"channel_id": cid, "data": {"type": "typing", "data": {"typing": True}}}
        )
        assert ack == {"ok": True}
        for client in (a, b):
            got = await client.wait_for("events:channel", of("typing", cid))
            assert got["user"]["id"] == cy["id"]

        # Removing Cy on process 0 takes Cy's session on process 2 out of the room at once.
        async with fleet.servers[0].http(ada["token"]) as http:
            await json_of(
                await http.post(
                    f"/api/v1/channels/{cid}/update/members/remove", json={"user_ids": [cy["id"]]}
                )
            )
            await json_of(await http.post(f"/api/v1/channels/{cid}/messages/post", json={"content": "after"}))
        await b.wait_for(
            "events:channel",
            lambda p: p["data"]["type"] == "message" and p["data"]["data"]["content"] == "after",
        )
        await c.expect_none(
            "events:channel",
            lambda p: p["data"]["type"] == "message" and p["data"]["data"]["content"] == "after",
        )

        # Adding back on process 1 brings the session on process 2 in again.
        async with fleet.servers[1].http(ada["token"]) as http:
            await json_of(
                await http.post(f"/api/v1/channels/{cid}/update/members/add", json={"user_ids": [cy["id"]]})
            )
        await asyncio.sleep(0.2)
        async with fleet.servers[0].http(bob["token"]) as http:
            await json_of(await http.post(f"/api/v1/channels/{cid}/messages/post", json={"content": "back"}))
        await c.wait_for(
            "events:channel",
            lambda p: p["data"]["type"] == "message" and p["data"]["data"]["content"] == "back",
        )
    finally:
        for client in (a, b, c):
            await client.close()


async def test_signout_ends_the_session_on_another_process(fleet: Fleet) -> None:
    ada = await fleet.signup("Ada")
    b = await fleet.client(2, ada["token"])
    try:
        async with fleet.servers[0].http(ada["token"]) as http:
            await json_of(await http.post("/api/v1/auths/signout"))
        for _ in range(100):
            if not b.sio.connected:
                break
            await asyncio.sleep(0.05)
        assert not b.sio.connected
        refused = RecordingClient(fleet.servers[1].url)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await refused.connect(ada["token"])
        assert refused.connect_error == {"message": "token revoked", "data": {"code": "unauthorized"}}
    finally:
        await b.close()


async def test_sigkill_leaves_no_ghosts_and_cleanup_lock_moves(fleet: Fleet) -> None:
    ada, dee = await fleet.signup("Ada"), await fleet.signup("Dee")
    a = await fleet.client(0, ada["token"])
    d = await fleet.client(2, dee["token"])
    await d.emit("usage", {"model": "ghost-model"})
    await asyncio.sleep(0.3)
    async with fleet.servers[0].http(ada["token"]) as http:
        usage = await json_of(await http.get("/api/usage"))
    assert usage["user_count"] == 2 and "ghost-model" in usage["model_ids"]

    redis_client = fleet.redis()
    lock_key = f"{fleet.prefix}lock:usage-cleanup"
    try:
        owner_before = await redis_client.get(lock_key)
        assert owner_before is not None
        # Kill the process that owns the clean-up lock (or process 2 if that is not one we can tell).
        fleet.servers[2].kill()
        # After the TTL (plus a lock hand-over if the dead process held the clean-up lock), nothing of the
        # dead process is left: no session, no user, no usage entry, not even in Redis's raw keys.
        deadline = asyncio.get_running_loop().time() + PRESENCE_TTL * 6
        leftovers = -1
        while asyncio.get_running_loop().time() < deadline:
            async with fleet.servers[0].http(ada["token"]) as http:
                usage = await json_of(await http.get("/api/usage"))
            leftovers = await redis_client.zcard(fleet.session_key("sids")) + await redis_client.zcard(
                fleet.session_key("usage")
            )
            if usage == {"model_ids": [], "user_count": 1} and leftovers == 1:
                break
            await asyncio.sleep(0.2)
        assert usage == {"model_ids": [], "user_count": 1}
        assert leftovers == 1  # Ada's live session only
        assert await redis_client.zcard(fleet.session_key("users")) == 1
        assert await redis_client.get(lock_key) is not None
    finally:
        await redis_client.aclose()
        await a.close()
        await d.close()


async def test_cleanup_lock_is_taken_over_when_its_owner_dies(fleet: Fleet) -> None:
    redis_client = fleet.redis()
    lock_key = f"{fleet.prefix}lock:usage-cleanup"
    try:
        owner = await redis_client.get(lock_key)
        assert owner is not None
        logs = {i: s.log() for i, s in enumerate(fleet.servers)}
        victim = next(i for i, text in logs.items() if owner.decode() in text)
        fleet.servers[victim].kill()
        new_owner = owner
        for _ in range(int(PRESENCE_TTL * 10)):
            await asyncio.sleep(0.2)
            new_owner = await redis_client.get(lock_key)
            if new_owner is not None and new_owner != owner:
                break
        assert new_owner is not None and new_owner != owner
    finally:
        await redis_client.aclose()


async def test_redis_restart_delivery_resumes_and_readiness_tells(tmp_path: Path) -> None:
    redis = RedisProcess().start()
    try:
        async with fleet_of(2, tmp_path, redis.url) as fl:
            ada, bob = await fl.signup("Ada"), await fl.signup("Bob")
            a = await fl.client(0, ada["token"])
            try:
                async with fl.servers[1].http(bob["token"]) as http:
                    cid = (
                        await json_of(
                            await http.post(
                                "/api/v1/channels/create",
                                json={"name": "g", "type": "group", "user_ids": [ada["id"]]},
                            )
                        )
                    )["id"]
                await a.wait_for("events:channel", of("channel:created", cid))

                redis.shutdown()
                ready = 200
                for _ in range(100):
                    async with fl.servers[0].http() as http:
                        ready = (await http.get("/health/ready")).status_code
                    if ready == 503:
                        break
                    await asyncio.sleep(0.1)
                assert ready == 503

                redis.start_again()
                for _ in range(150):
                    async with fl.servers[0].http() as http:
                        ready = (await http.get("/health/ready")).status_code
                    if ready == 200:
                        break
                    await asyncio.sleep(0.1)
                assert ready == 200
                # Sessions are re-registered by their processes within one upkeep interval.
                await asyncio.sleep(PRESENCE_TTL / 3 + 0.5)
                async with fl.servers[1].http(bob["token"]) as http:
                    await json_of(
                        await http.post(f"/api/v1/channels/{cid}/messages/post", json={"content": "again"})
                    )
                got = await a.wait_for("events:channel", of("message", cid), timeout=10)
                assert got["data"]["data"]["content"] == "again"
            finally:
                await a.close()
    finally:
        redis.stop()


async def test_event_call_and_stop_reach_another_process(
    tmp_path: Path, fleet_redis: tuple[str, bool]
) -> None:
    """A generation runs on process 0: its confirmation call reaches the asking tab on process 1 and the answer
    comes back; a stop sent to process 1 stops it (and another user's stop is refused)."""
    from chatwire.client import ChatEvent, ChatwireClient
    from chatwire.services.models import demo_answer

    async with fleet_of(2, tmp_path, *fleet_redis) as fl:
        for s in fl.servers:
            s.env["CHATWIRE_DEMO_TOKENS_PER_SECOND"] = "100"
        ada, eve = await fl.signup("Ada"), await fl.signup("Eve")
        async with fl.servers[0].http(ada["token"]) as http:
            chat_id = (await json_of(await http.post("/api/v1/chats/new", json={"chat": {"title": "t"}})))[
                "id"
            ]
        tab = await ChatwireClient(fl.servers[1].url, ada["token"], reconnection=False).connect()
        asked: list[ChatEvent] = []

        def answer(event: ChatEvent) -> bool:
            asked.append(event)
            return True

        tab.on_call("confirmation", answer)
        state = tab.track(chat_id)
        try:
            async with fl.servers[0].http(ada["token"]) as http:
                out = await json_of(
                    await http.post(
                        "/api/chat/completions",
                        json={
                            "model": "demo",
                            "stream": True,
                            "chat_id": chat_id,
                            "id": "a1",
                            "session_id": tab.sid,
                            "messages": [
                                {"role": "user", "content": "please confirm, then go on for 3000 tokens"}
                            ],
                        },
                    )
                )
            await tab.wait_for(lambda: len(state.messages.get("a1", {}).get("content", "")) > 40, timeout=30)
            assert len(asked) == 1 and asked[0].message_id == "a1"  # the call crossed to process 1 and back

            async with fl.servers[1].http(eve["token"]) as http:
                assert (await http.post(f"/api/tasks/stop/{out['task_id']}")).status_code == 404
            async with fl.servers[1].http(ada["token"]) as http:
                r = await http.post(f"/api/tasks/stop/{out['task_id']}")
                assert r.status_code == 200, r.text
            rebuilt = await tab.wait_done(chat_id, "a1", timeout=15)
            full = "".join(demo_answer("please confirm, then go on for 3000 tokens"))
            assert 0 < len(rebuilt["content"]) < len(full) and full.startswith(rebuilt["content"])
            # Read where the generation ran: that process's read waits for its writer (a consistent snapshot).
            async with fl.servers[0].http(ada["token"]) as http:
                chat = await json_of(await http.get(f"/api/v1/chats/{chat_id}"))
            assert chat["chat"]["history"]["messages"]["a1"]["content"] == rebuilt["content"]
        finally:
            await tab.close()


async def test_collaboration_across_processes(fleet: Fleet) -> None:
    """Editors on different processes see each other's updates; a joiner on another process gets the whole
    document from the shared store, and `sessions` lists the editors of every process."""
    from pycrdt import Doc, Text

    ada, bea = await fleet.signup("Ada"), await fleet.signup("Bea")
    async with fleet.servers[0].http(ada["token"]) as http:
        note = await json_of(
            await http.post(
                "/api/v1/notes/create",
                json={
                    "title": "n",
                    "access_control": {"write": {"user_ids": [bea["id"]]}},
                },
            )
        )
    document_id = f"note:{note['id']}"
    a, b = await fleet.client(0, ada["token"]), await fleet.client(1, bea["token"])
    c = None
    try:
        assert "error" not in await a.call("ydoc:document:join", {"document_id": document_id})
        assert "error" not in await b.call("ydoc:document:join", {"document_id": document_id})
        doc = Doc()
        text = doc.get("t", type=Text)
        before = doc.get_state()
        text.insert(0, "hello from process 0")
        ack = await a.call(
            "ydoc:document:update", {"document_id": document_id, "update": list(doc.get_update(before))}
        )
        assert "error" not in ack, ack
        relayed = await b.wait_for("ydoc:document:update", lambda p: p["document_id"] == document_id)
        assert relayed["user_id"] == ada["id"]

        c = await fleet.client(1, ada["token"])
        assert "error" not in await c.call("ydoc:document:join", {"document_id": document_id})
        state = await c.wait_for("ydoc:document:state", lambda p: p["document_id"] == document_id)
        joined = Doc()
        joined.apply_update(bytes(state["state"]))
        assert str(joined.get("t", type=Text)) == "hello from process 0"
        assert set(state["sessions"]) == {a.sio.get_sid(), b.sio.get_sid(), c.sio.get_sid()}
    finally:
        for client in (a, b, c):
            if client is not None:
                await client.close()


async def test_oversized_event_travels_by_reference_in_fleet_mode(
    settings: Settings, fleet_redis: tuple[str, bool]
) -> None:
    """An event over CHATWIRE_FLEET_MAX_PAYLOAD_BYTES is not published on Redis pub/sub itself (it could trip the
    output buffer limit): a reference is, and the event arrives whole, in order with the small ones."""
    tuned = settings.model_copy(
        update={
            "redis_url": fleet_redis[0],
            "redis_cluster": fleet_redis[1],
            "redis_prefix": f"cwtest:{uuid.uuid4().hex[:8]}:",
            "fleet_max_payload_bytes": 4096,
        }
    )
    async with run_server(tuned) as server:
        ada = await server.signup("Ada")
        _record, key = await server.services.api_keys.create("t", ["publish"])
        client = await RecordingClient(server.url).connect(ada["token"])
        manager = server.app.state.fleet
        try:
            async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": key}) as http:
                for text in ("a", "x" * 10_000, "b"):
                    r = await http.post(
                        "/api/v1/events/publish",
                        json={"room": f"user:{ada['id']}", "event": "notice", "data": {"text": text}},
                    )
                    assert r.status_code == 200, r.text
            await client.wait_for("notice", lambda p: p["text"] == "b")
            assert [p["text"] for p in client.received["notice"]] == ["a", "x" * 10_000, "b"]
            assert manager.large_sent == 1 and manager.large_received == 1
        finally:
            await client.close()


async def test_events_published_while_a_process_resubscribes_are_caught_up_from_the_log(
    tmp_path: Path,
) -> None:
    """Pub/sub drops what is published while a subscriber is away; for recoverable rooms the process delivers it
    from the shared log after resubscribing. The subscribers' connections are killed (`CLIENT KILL TYPE pubsub`)
    and a channel post is made at once through the other process's publishing connection, so it is published
    while nobody listens; the tab gets it anyway, once, in order. Repeated until a catch-up actually carried a
    post (a post that lands after the resubscription arrives live, which proves nothing)."""
    redis = RedisProcess().start()
    try:
        async with fleet_of(2, tmp_path, redis.url) as fl:
            ada, bob = await fl.signup("Ada"), await fl.signup("Bob", 1)
            b = await fl.client(1, bob["token"])
            try:
                async with fl.servers[0].http(ada["token"]) as http:
                    cid = (
                        await json_of(
                            await http.post(
                                "/api/v1/channels/create",
                                json={"name": "g", "type": "group", "user_ids": [bob["id"]]},
                            )
                        )
                    )["id"]
                    await b.wait_for("events:channel", of("channel:created", cid))
                    posted: list[str] = []
                    caught = False
                    for attempt in range(10):
                        subprocess.run(
                            ["redis-cli", "-p", str(redis.port), "client", "kill", "type", "pubsub"],
                            capture_output=True,
                            check=True,
                        )
                        content = f"during gap {attempt}"
                        r = await http.post(
                            f"/api/v1/channels/{cid}/messages/post", json={"content": content}
                        )
                        assert r.status_code == 200, r.text
                        posted.append(content)
                        await b.wait_for("events:channel", message_with(content), timeout=15)
                        if '"msg": "bus gap: caught up from the log", "entries": 1' in fl.servers[1].log():
                            caught = True
                            break
                    assert caught, [line for line in fl.servers[1].log().splitlines() if "gap" in line][-6:]
                    got = [
                        p["data"]["data"]["content"]
                        for p in b.received["events:channel"]
                        if p["data"]["type"] == "message"
                    ]
                    assert got == posted  # each once, in order
            finally:
                await b.close()
    finally:
        redis.stop()
