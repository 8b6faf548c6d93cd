"""Accounts across a fleet: sign-in guessing limits count failures on every process as one (Redis AttemptLog), and
"sign out all devices" on one process refuses the user's tokens on the others at once, warm caches included."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import socketio

from tests.integration.test_fleet import REDIS_URL, fleet_of, require_redis
from tests.procs import json_of
from tests.sio import RecordingClient


async def test_failed_signins_on_two_processes_share_one_account_limit(tmp_path: Path) -> None:
    await require_redis()
    env = {"CHATWIRE_SIGNIN_ACCOUNT_ATTEMPTS": "3", "CHATWIRE_SIGNIN_IP_ATTEMPTS": "100"}
    async with fleet_of(2, tmp_path, REDIS_URL, extra_env=env) as fleet:
        async with fleet.servers[0].http() as http:
            r = await http.post(
                "/api/v1/auths/signup",
                json={"name": "Ada", "email": "ada@example.com", "password": "right-password"},
            )
            assert r.status_code == 200, r.text
        wrong = {"email": "ada@example.com", "password": "guess"}
        codes = []
        for i in range(3):  # 0, 1, 0: no process alone sees three failures
            async with fleet.servers[i % 2].http() as http:
                codes.append((await http.post("/api/v1/auths/signin", json=wrong)).status_code)
        assert codes == [401, 401, 401]
        for server in fleet.servers:
            async with server.http() as http:
                r = await http.post("/api/v1/auths/signin", json={**wrong, "password": "right-password"})
            assert r.status_code == 429 and r.json()["code"] == "rate_limited", r.text
            assert 1 <= int(r.headers["retry-after"]) <= 300
        # Another account is not affected, on either process.
        async with fleet.servers[1].http() as http:
            r = await http.post("/api/v1/auths/signin", json={"email": "bob@example.com", "password": "x"})
        assert r.status_code == 401


async def test_sign_out_everywhere_on_one_process_ends_the_sessions_and_tokens_on_another(
    tmp_path: Path,
) -> None:
    await require_redis()
    async with fleet_of(2, tmp_path, REDIS_URL) as fleet:
        ada, bob = await fleet.signup("Ada"), await fleet.signup("Bob")
        tab = await RecordingClient(fleet.servers[1].url).connect(bob["token"])  # warms process 1's caches
        try:
            async with fleet.servers[0].http(ada["token"]) as http:
                r = await http.post(f"/api/v1/users/{bob['id']}/sessions/revoke")
                assert r.status_code == 200, r.text
            async with asyncio.timeout(10):
                while tab.sio.connected:
                    await asyncio.sleep(0.02)
            refused = RecordingClient(fleet.servers[1].url)
            with pytest.raises(socketio.exceptions.ConnectionError):
                await refused.connect(bob["token"], join=False)
            await refused.close()
            async with fleet.servers[1].http(bob["token"]) as http:
                assert (await http.get("/api/v1/auths/")).status_code == 401
            async with fleet.servers[1].http(ada["token"]) as http:
                me = await json_of(await http.get("/api/v1/auths/"))
            assert me["id"] == ada["id"]
        finally:
            await tab.close()
