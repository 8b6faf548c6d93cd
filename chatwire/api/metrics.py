"""GET /metrics: this process's Prometheus metrics in the text exposition format."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from chatwire.api.deps import ServicesDep
from chatwire.metrics import CONTENT_TYPE

router = APIRouter(tags=["system"])


@router.get("/metrics", include_in_schema=False)
async def metrics(services: ServicesDep) -> Response:
    return Response(await services.metrics.render(), media_type=CONTENT_TYPE)
