"""Scoped API keys for a backend that drives chatwire through the server API.

A key is `cwk_` + 32 random bytes (url-safe); only its sha256 is stored (a long random key needs no slow hash,
and verification stays one indexed look-up). Every call checks the database, so a revocation holds at once on
every process that shares it.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from chatwire.db.models import ApiKey
from chatwire.db.repos.api_keys import ApiKeyRepo
from chatwire.errors import ChatwireError, ErrorCode
from chatwire.util import new_id

KEY_PREFIX = "cwk_"
SCOPES = ("publish", "channels", "presence", "webhooks", "admin")  # admin may do everything


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiCaller:
    """The key that authenticated a server API call."""

    key_id: str
    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def key_json(row: ApiKey) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "scopes": list(row.scopes),
        "created_at": row.created_at,
        "revoked_at": row.revoked_at,
    }


class ApiKeyService:
    def __init__(self, repo: ApiKeyRepo) -> None:
        self.repo = repo

    async def create(self, name: str, scopes: list[str]) -> tuple[dict[str, Any], str]:
        """A new key: its record and the plain key, which is shown this once and never stored."""
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown or not scopes:
            raise ChatwireError(
                ErrorCode.INVALID_PAYLOAD, f"scopes must be one or more of {', '.join(SCOPES)}; got {scopes}"
            )
        name = name.strip()[:255] or "unnamed"
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        row = await self.repo.create(
            key_id=new_id(),
            name=name,
            key_hash=hash_key(key),
            prefix=key[:12],
            scopes=list(dict.fromkeys(scopes)),
        )
        return key_json(row), key

    async def list(self) -> list[dict[str, Any]]:
        return [key_json(row) for row in await self.repo.list()]

    async def revoke(self, key_id: str) -> bool:
        return await self.repo.revoke(key_id)

    async def authenticate(self, key: str | None) -> ApiCaller:
        """The caller a key proves; `unauthorized` for a missing, unknown or revoked key."""
        if not key or not key.startswith(KEY_PREFIX) or len(key) > 128:
            raise ChatwireError(ErrorCode.UNAUTHORIZED, "missing or malformed API key")
        row = await self.repo.by_hash(hash_key(key))
        if row is None:
            raise ChatwireError(ErrorCode.UNAUTHORIZED, "unknown API key")
        if row.revoked_at is not None:
            raise ChatwireError(ErrorCode.UNAUTHORIZED, "API key revoked")
        return ApiCaller(key_id=row.id, name=row.name, scopes=frozenset(row.scopes))
