"""Webhooks and room presence with real processes: a SIGKILL between acceptance and delivery loses no webhook
and sends none twice; an incoming webhook reaches an official socket.io-client member live; presence across two
processes of a fleet, and a killed process's members gone within the TTL."""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatwire.client.server import ServerClient
from chatwire.client.webhooks import verify
from chatwire.config import Settings
from tests.conftest import run_server
from tests.integration.test_fleet import PRESENCE_TTL, REDIS_URL, fleet_of, require_redis
from tests.nodeclient import NodeClient, node_or_skip
from tests.procs import ServerProcess, json_of
from tests.webhook_receiver import run_receiver

pytestmark = pytest.mark.e2e

FAST_RETRIES = {
    "CHATWIRE_WEBHOOK_TIMEOUT_SECONDS": "2",
    "CHATWIRE_WEBHOOK_BACKOFF_BASE_SECONDS": "0.1",
    "CHATWIRE_WEBHOOK_BACKOFF_MAX_SECONDS": "0.5",
    "CHATWIRE_WEBHOOK_ENDPOINT_CACHE_SECONDS": "0",
    "CHATWIRE_JWT_SECRET": "e2e-secret",
}


def cli_key(env: dict[str, str], *scopes: str) -> str:
    argv = [sys.executable, "-m", "chatwire", "keys", "create", "--name", "e2e"]
    for scope in scopes:
        argv += ["--scope", scope]
    out = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


async def signup(url: str, name: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url) as http:
        body = {
            "name": name,
            "email": f"{name.lower()}-{uuid.uuid4().hex[:6]}@example.com",
            "password": "pw-xxxxxxxx",
        }
        return await json_of(await http.post("/api/v1/auths/signup", json=body))  # type: ignore[no-any-return]


async def test_sigkill_between_acceptance_and_delivery_delivers_after_restart_once_per_id(
    tmp_path: Path,
) -> None:
    async with run_receiver() as receiver:
        receiver.hang_paths = {"/hook"}  # attempts in flight when the process dies, others still waiting
        env = {**FAST_RETRIES, "CHATWIRE_DATA_DIR": str(tmp_path / "data")}
        first = await ServerProcess(tmp_path, env, name="first").start()
        try:
            key = cli_key(env, "webhooks")
            async with ServerClient(first.url, key) as api:
                endpoint = await api.create_webhook(receiver.endpoint(), ["channel.message.posted"])
            ada = await signup(first.url, "Ada")
            async with first.http(ada["token"]) as http:
                channel = await json_of(
                    await http.post("/api/v1/channels/create", json={"name": "c", "type": "group"})
                )
                posted = []
                for i in range(6):
                    r = await http.post(
                        f"/api/v1/channels/{channel['id']}/messages/post", json={"content": f"m{i}"}
                    )
                    posted.append((await json_of(r))["id"])
            # Accepted (in the outbox) and partly attempted: the default 4 attempts hang in the receiver.
            await receiver.wait(lambda r: len(r.calls) >= 4, timeout=10)
            assert receiver.delivered() == []
        finally:
            first.kill()
        receiver.hang_paths = set()
        second = await ServerProcess(tmp_path, env, name="second").start()
        try:
            await receiver.wait(lambda r: len(r.delivered()) >= len(posted), timeout=30)
            await asyncio.sleep(1.0)  # a second delivery of anything would arrive now
            ok = receiver.delivered()
            per_id = collections.Counter(c.headers["webhook-id"] for c in ok)
            assert all(n == 1 for n in per_id.values()), per_id
            messages = sorted(
                verify(endpoint["secret"], c.headers, c.body)["data"]["message"]["id"] for c in ok
            )
            assert messages == sorted(posted)
            # The hung attempts had the same ids as their deliveries after the restart (de-duplicable).
            hung = {c.headers["webhook-id"] for c in receiver.calls if c.status is None}
            assert hung and hung <= set(per_id)
        finally:
            second.stop()


async def test_incoming_webhook_reaches_an_official_socketio_client_member(settings: Settings) -> None:
    node_or_skip()
    async with run_server(settings) as server:
        ada = await server.signup("Ada")
        bob = await server.signup("Bob")
        async with server.http(ada["token"]) as http:
            channel = await json_of(
                await http.post(
                    "/api/v1/channels/create", json={"name": "ci", "type": "group", "user_ids": [bob["id"]]}
                )
            )
            hook = await json_of(
                await http.post(f"/api/v1/channels/{channel['id']}/webhooks/create", json={"name": "CI"})
            )
        tab = await NodeClient(server.url, bob["token"]).start()
        try:
            async with httpx.AsyncClient(base_url=server.url) as anon:
                r = await anon.post(f"/api/v1/channels/webhooks/{hook['id']}/bad", json={"content": "forged"})
                assert r.status_code == 401
                r = await anon.post(
                    f"/api/v1/channels/webhooks/{hook['id']}/{hook['token']}", json={"content": "deploy done"}
                )
                assert r.status_code == 200, r.text
            event = await tab.wait_event("events:channel", lambda e: e["data"]["type"] == "message")
            assert event["data"]["data"]["content"] == "deploy done"
            assert event["user"] == {"id": hook["id"], "name": "CI", "role": "webhook"}
            assert all(e[0]["data"]["data"].get("content") != "forged" for e in tab.events("events:channel"))
        finally:
            await tab.close()


def presence_of(kind: str, user_id: str) -> Any:
    return lambda e: e["type"] == kind and e["user"]["id"] == user_id


async def present(url: str, token: str, channel_id: str) -> set[str]:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
        body = await json_of(await http.get(f"/api/v1/channels/{channel_id}/presence"))
    return {u["id"] for u in body["users"]}


async def test_presence_across_two_processes_and_a_killed_process_leaves_no_ghosts(tmp_path: Path) -> None:
    await require_redis()
    async with run_receiver() as receiver, fleet_of(2, tmp_path, REDIS_URL, extra_env=FAST_RETRIES) as fleet:
        async with ServerClient(fleet.servers[0].url, fleet.api_key("webhooks")) as api:
            endpoint = await api.create_webhook(
                receiver.endpoint(), ["user.online", "user.offline", "channel.message.posted"]
            )
        ada, bob, cy = await fleet.signup("Ada"), await fleet.signup("Bob", 1), await fleet.signup("Cy", 1)
        async with fleet.servers[0].http(ada["token"]) as http:
            channel = await json_of(
                await http.post(
                    "/api/v1/channels/create",
                    json={"name": "p", "type": "group", "user_ids": [bob["id"], cy["id"]]},
                )
            )
        cid = channel["id"]
        a = await fleet.client(0, ada["token"])
        b = await fleet.client(1, bob["token"])
        try:
            await a.wait_for("events:presence", presence_of("join", bob["id"]))
            for url in (fleet.servers[0].url, fleet.servers[1].url):
                assert await present(url, ada["token"], cid) == {ada["id"], bob["id"]}
            key = fleet.api_key("presence")
            async with ServerClient(fleet.servers[1].url, key) as api:
                seen = await api._call("GET", f"/api/v1/presence/rooms/channel:{cid}")
            assert {u["id"] for u in seen["users"]} == {ada["id"], bob["id"]}
            c = await fleet.client(1, cy["token"])
            for client in (a, b):
                got = await client.wait_for("events:presence", presence_of("join", cy["id"]))
                assert got["room"] == f"channel:{cid}"
            await c.close()
            for client in (a, b):
                await client.wait_for("events:presence", presence_of("leave", cy["id"]))
            killed = time.monotonic()
            fleet.servers[1].kill()  # bob's process: no disconnect handler runs
            await a.wait_for("events:presence", presence_of("leave", bob["id"]), timeout=PRESENCE_TTL * 5)
            assert time.monotonic() - killed < PRESENCE_TTL * 5
            assert await present(fleet.servers[0].url, ada["token"], cid) == {ada["id"]}
            # The webhooks saw it all, each delivery once, from whichever process claimed it.
            async with fleet.servers[0].http(ada["token"]) as http:
                posted = await json_of(
                    await http.post(f"/api/v1/channels/{cid}/messages/post", json={"content": "x"})
                )

            def seen(r: Any) -> list[tuple[str, str]]:
                out = []
                for c in r.delivered():
                    event = verify(endpoint["secret"], c.headers, c.body)
                    data = event["data"]
                    out.append(
                        (
                            event["type"],
                            data["user"]["id"] if "message" not in data else data["message"]["id"],
                        )
                    )
                return out

            await receiver.wait(
                lambda r: ("user.offline", bob["id"]) in seen(r) and len(seen(r)) >= 6, timeout=30
            )
            await asyncio.sleep(0.5)
            assert sorted(seen(receiver)) == sorted(
                [
                    ("user.online", ada["id"]),
                    ("user.online", bob["id"]),
                    ("user.online", cy["id"]),
                    ("user.offline", cy["id"]),
                    ("user.offline", bob["id"]),
                    ("channel.message.posted", posted["id"]),
                ]
            )
            ids = [c.headers["webhook-id"] for c in receiver.delivered()]
            assert len(ids) == len(set(ids))
        finally:
            await a.close()
            await b.close()
