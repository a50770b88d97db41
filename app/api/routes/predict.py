"""POST /predict and POST /predict/batch: uploads in, the network's digit and sum out.

Where a request goes: read the upload -> app.imaging.prepare_image (in the preprocessing pool)
-> app.inference.DynamicBatcher (one batched forward pass for many requests) -> JSON.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from pydantic import Field

from app import metrics
from app.api.deps import RuntimeDep
from app.errors import Overloaded, ServiceError, request_id_of
from app.imaging import PreparedImage, prepare_image
from app.inference import Prediction
from app.schemas import BatchItem, BatchResponse, ErrorDetail, PredictResponse, error_responses
from app.state import Runtime

router = APIRouter(tags=["predict"])

ImageFile = Annotated[
    UploadFile,
    File(description="the digit: PNG, JPEG, WebP, BMP or GIF; a photo of ink on paper is fine"),
]
Number = Annotated[int, Form(ge=0, le=9, description="the number to add, 0..9")]
IncludeInput = Annotated[
    bool, Query(description="also return the 28x28 image the model saw, as a base64 PNG")
]


def _prepare_all(data: list[bytes], max_pixels: int) -> list[PreparedImage | ServiceError]:
    """Runs in the preprocessing pool: one result or one error per image, never an exception."""
    out: list[PreparedImage | ServiceError] = []
    for blob in data:
        started = time.perf_counter()
        try:
            out.append(prepare_image(blob, max_pixels))
        except ServiceError as exc:
            out.append(exc)
        metrics.PREPROCESS_SECONDS.observe(time.perf_counter() - started)
    return out


def _admit(runtime: Runtime, images: int) -> None:
    """Refuse before decoding when the model's queue has no room: under overload, decoding images
    that the batcher will refuse anyway only deepens it. The batcher checks again on queueing."""
    if runtime.batcher.depth + images > runtime.batcher.max_queue:
        raise Overloaded("the service is at capacity; retry shortly")


async def _prepare(runtime: Runtime, data: list[bytes]) -> list[PreparedImage | ServiceError]:
    """Decode off the event loop, split across the pool's threads."""
    loop = asyncio.get_running_loop()
    pool = runtime.preprocess_pool
    max_pixels = runtime.settings.max_image_pixels
    chunks = max(1, min(len(data), runtime.preprocess_threads))
    size = -(-len(data) // chunks)
    parts = await asyncio.gather(
        *(
            loop.run_in_executor(pool, _prepare_all, data[i : i + size], max_pixels)
            for i in range(0, len(data), size)
        )
    )
    return [item for part in parts for item in part]


def _response(
    prediction: Prediction, number: int, version: str, prepared: PreparedImage | None
) -> PredictResponse:
    return PredictResponse(
        digit=prediction.digit,
        digit_confidence=round(prediction.digit_confidence, 6),
        sum=prediction.sum,
        sum_confidence=round(prediction.sum_confidence, 6),
        number=number,
        consistent=prediction.sum == prediction.digit + number,
        model_version=version,
        input_png=prepared.to_png_base64() if prepared is not None else None,
    )


@router.post(
    "/predict",
    response_model=PredictResponse,
    response_model_exclude_none=True,
    summary="Read the digit in an image and add a number to it",
    responses=error_responses(400, 408, 413, 415, 422, 500, 503),
)
async def predict(
    request: Request,
    runtime: RuntimeDep,
    image: ImageFile,
    number: Number,
    include_input: IncludeInput = False,
) -> PredictResponse:
    """Send `image` (a file) and `number` (0..9) as multipart/form-data. The answer's `sum` comes
    from the network's own sum head; `consistent` says whether it equals `digit + number`."""
    form = await request.form()  # parsed once already, for the parameters above
    for name in ("image", "number"):
        # FastAPI keeps the last of repeated fields; answering for one of many would mislead.
        if len(form.getlist(name)) > 1:
            raise _FormShapeError(
                f"send one {name} field, not {len(form.getlist(name))}; "
                "/predict/batch takes many images",
                name,
            )
    _admit(runtime, 1)
    (prepared,) = await _prepare(runtime, [await image.read()])
    if isinstance(prepared, ServiceError):
        raise prepared
    prediction = await runtime.batcher.predict(prepared.tensor, number)
    return _response(prediction, number, runtime.model.version, prepared if include_input else None)


@router.post(
    "/predict/batch",
    response_model=BatchResponse,
    response_model_exclude_none=True,
    summary="Many images with their numbers in one request, answered in order",
    responses=error_responses(400, 408, 413, 422, 500, 503),
)
async def predict_batch(
    request: Request,
    runtime: RuntimeDep,
    images: Annotated[list[UploadFile], File(min_length=1, description="the images, in order")],
    numbers: Annotated[
        list[Annotated[int, Field(ge=0, le=9)]],
        Form(min_length=1, description="one number 0..9 per image, same order"),
    ],
    include_input: IncludeInput = False,
) -> BatchResponse:
    """Repeat the `images` and `numbers` fields once per pair (at most DIGITSUM_MAX_BATCH_IMAGES).
    A bad image fails only its own entry, which carries its own error."""
    limit = runtime.settings.max_batch_images
    if len(images) > limit:
        raise _FormShapeError(f"at most {limit} images per request, got {len(images)}", "images")
    if len(numbers) != len(images):
        raise _FormShapeError(
            f"{len(images)} images but {len(numbers)} numbers; send one number per image",
            "numbers",
        )
    _admit(runtime, len(images))
    prepared = await _prepare(runtime, [await f.read() for f in images])
    good = [(i, p) for i, p in enumerate(prepared) if isinstance(p, PreparedImage)]
    predictions = await runtime.batcher.predict_many([(p.tensor, numbers[i]) for i, p in good])
    by_index = dict(zip((i for i, _ in good), predictions, strict=True))
    request_id = request_id_of(request)
    results: list[BatchItem] = []
    for i, item in enumerate(prepared):
        if isinstance(item, ServiceError):
            metrics.ERRORS.labels(item.code).inc()
            results.append(
                BatchItem(
                    index=i,
                    error=ErrorDetail(
                        code=item.code,
                        message=item.message,
                        field=f"images[{i}]",
                        request_id=request_id,
                    ),
                )
            )
        else:
            results.append(
                BatchItem(
                    index=i,
                    prediction=_response(
                        by_index[i],
                        numbers[i],
                        runtime.model.version,
                        item if include_input else None,
                    ),
                )
            )
    return BatchResponse(results=results)


class _FormShapeError(ServiceError):
    status, code = 422, "validation_error"

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message, field=field)
