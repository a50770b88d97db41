"""GET /health/live and /health/ready: the names load balancers and Kubernetes probes use."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import ServiceDep
from app.errors import Draining, NotReady
from app.schemas import HealthResponse
from app.state import Phase

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", response_model=HealthResponse, summary="The process is up")
async def live() -> HealthResponse:
    return HealthResponse(status="alive")


@router.get(
    "/ready",
    response_model=HealthResponse,
    summary="The model is loaded and warm, and the instance is not draining",
    responses={503: {"model": HealthResponse, "description": "loading or draining; Retry-After"}},
)
async def ready(service: ServiceDep) -> JSONResponse:
    if service.phase is Phase.READY:
        return JSONResponse({"status": "ready"})
    # the same Retry-After as the prediction routes' 503s in this phase (app/errors.py)
    retry = NotReady.retry_after if service.phase is Phase.LOADING else Draining.retry_after
    return JSONResponse(
        {"status": service.phase.value}, status_code=503, headers={"Retry-After": str(retry)}
    )
