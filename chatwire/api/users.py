"""/api/v1/users: the user list (admin)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from chatwire.api.deps import MAX_SKIP, AdminDep, ServicesDep
from chatwire.services.auth import user_json

router = APIRouter(prefix="/api/v1/users", tags=["users"])


@router.get("/")
async def list_users(
    _admin: AdminDep,
    services: ServicesDep,
    skip: int = Query(0, ge=0, le=MAX_SKIP),
    limit: int = Query(1000, ge=1, le=10_000),
) -> list[dict[str, Any]]:
    return [user_json(u) for u in await services.users.list(skip, limit)]
