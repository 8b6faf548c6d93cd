"""Sign-in guessing limits hold across a fleet: failures on one process count on the others (Redis AttemptLog), so
a guesser who spreads tries over the processes behind a load balancer meets one limit."""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_fleet import REDIS_URL, fleet_of, require_redis


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
