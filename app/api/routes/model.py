"""GET /model: the model card from the checkpoint, and how this process runs it."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import RuntimeDep
from app.schemas import ModelInfo, error_responses

router = APIRouter(tags=["model"])


@router.get(
    "/model",
    response_model=ModelInfo,
    summary="Model card: version, metrics, hashes",
    responses=error_responses(503),
)
async def model_info(runtime: RuntimeDep) -> ModelInfo:
    model = runtime.model
    return ModelInfo(
        version=model.version,
        sha256=model.sha256,
        device=str(model.device),
        engine=model.engine,
        card=model.card,
    )
