"""Cost of authenticating one call: a server API key (sha256 + one indexed look-up) against the peer measured in
the same run, chatwire's own JWT (HS256 decode + revocation look-up + user row), and an external HS256 token.

Run: .venv/bin/python -m bench.bench_auth [N]   (SQLite in a temp dir; prints calls/s and ratios)
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import jwt
from argon2 import PasswordHasher

from chatwire.config import Settings
from chatwire.db.engine import Database
from chatwire.db.repos.api_keys import ApiKeyRepo
from chatwire.db.repos.users import UserRepo
from chatwire.services.api_keys import ApiKeyService, hash_key
from chatwire.services.auth import AuthService
from chatwire.services.external_auth import ExternalVerifier


async def rate(label: str, n: int, call: object) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await call()  # type: ignore[operator]
    per_s = n / (time.perf_counter() - start)
    print(f"{label:<42} {per_s:10.0f} calls/s")
    return per_s


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}")
        await db.migrate()
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=Path(tmp),
            jwt_secret="s" * 40,
            external_algorithms=["HS256"],
            external_secret="e" * 40,
        )
        users = UserRepo(db)
        auth = AuthService(
            users, secret="s" * 40, token_ttl=3600, external=ExternalVerifier.from_settings(settings)
        )
        keys = ApiKeyService(ApiKeyRepo(db))
        _record, key = await keys.create("bench", ["publish"])
        user = await users.create(name="u", email="u@example.com", password_hash=None, role="user")
        own, _ = auth.issue_token(user)
        external = jwt.encode({"sub": "ext-1", "exp": int(time.time()) + 3600}, "e" * 40, algorithm="HS256")
        await auth.authenticate(external)  # provision once

        api = await rate("API key (sha256 + look-up)", n, lambda: keys.authenticate(key))
        peer = await rate("own JWT (decode + revoked? + user)", n, lambda: auth.authenticate(own))
        ext = await rate("external HS256 JWT (+ own check + user)", n, lambda: auth.authenticate(external))
        hasher = PasswordHasher()
        stored = hasher.hash(key)

        async def argon2_verify() -> None:
            await asyncio.to_thread(hasher.verify, stored, key)

        argon = await rate("argon2 verify alone (rejected design)", max(20, n // 50), argon2_verify)
        sha = await rate("sha256 alone", n * 10, lambda: asyncio.sleep(0, hash_key(key)))
        print(f"\nAPI key / own JWT: {api / peer:.2f}x   external JWT / own JWT: {ext / peer:.2f}x")
        print(f"sha256 / argon2 verify: {sha / argon:.0f}x")
        await db.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
