"""Server API keys: stored by sha256 hash, looked up by hash on every call (so a revocation holds at once)."""

from __future__ import annotations

import json
import sqlite3

from sqlalchemy import select, update

from chatwire.db.engine import Database
from chatwire.db.models import ApiKey
from chatwire.util import now_s


class ApiKeyRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self, *, key_id: str, name: str, key_hash: str, prefix: str, scopes: list[str]
    ) -> ApiKey:
        row = ApiKey(
            id=key_id, name=name, key_hash=key_hash, prefix=prefix, scopes=scopes, created_at=now_s()
        )
        async with self.db.session() as s:
            s.add(row)
        return row

    async def by_hash(self, key_hash: str) -> ApiKey | None:
        lane = self.db.sqlite_writer
        if lane is not None:  # one statement per server API call: the direct lane's reader (sqlite_writer.py)
            return await lane.read(lambda conn: _by_hash(conn, key_hash))
        async with self.db.read() as s:
            return (await s.execute(select(ApiKey).where(ApiKey.key_hash == key_hash))).scalar_one_or_none()

    async def list(self) -> list[ApiKey]:
        async with self.db.read() as s:
            return list((await s.execute(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id))).scalars())

    async def revoke(self, key_id: str) -> bool:
        """Mark the key revoked; False when there is no such key or it was revoked already."""
        async with self.db.session() as s:
            result = await s.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=now_s())
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]


def _by_hash(conn: sqlite3.Connection, key_hash: str) -> ApiKey | None:
    row = conn.execute(
        "SELECT id, name, key_hash, prefix, scopes, created_at, revoked_at FROM api_keys WHERE key_hash = ?",
        (key_hash,),
    ).fetchone()
    if row is None:
        return None
    key_id, name, stored_hash, prefix, scopes, created_at, revoked_at = row
    return ApiKey(
        id=key_id,
        name=name,
        key_hash=stored_hash,
        prefix=prefix,
        scopes=json.loads(scopes),
        created_at=created_at,
        revoked_at=revoked_at,
    )
