"""Usage, liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from chatwire.api.deps import ServicesDep, UserDep
from chatwire.backends.bus import Pings

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
    if services.bus is not None:
        # The bus is healthy only while its subscription is live: a deaf process must not look ready.
        checks["fleet_bus"] = services.bus.healthy
        checks["redis"] = (
            await services.bus.ping() if isinstance(services.bus, Pings) else services.bus.healthy
        )
    ok = all(checks.values())
    return JSONResponse({"status": ok, "checks": checks}, status_code=200 if ok else 503)
