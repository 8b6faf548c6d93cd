"""Usage, liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from chatwire.api.deps import ServicesDep, UserDep

router = APIRouter(tags=["system"])


@router.get("/api/usage")
async def usage(_user: UserDep, services: ServicesDep) -> dict[str, Any]:
    return await services.presence.snapshot()


@router.get("/health")
async def health() -> dict[str, Any]:
    return {"status": True}


@router.get("/health/ready")
async def ready(services: ServicesDep) -> JSONResponse:
    checks: dict[str, bool] = {}
    try:
        async with services.db.read() as s:
            await s.execute(text("SELECT 1"))
        checks["database"] = True
    except Exception:
        checks["database"] = False
    ok = all(checks.values())
    return JSONResponse({"status": ok, "checks": checks}, status_code=200 if ok else 503)
