"""POST /predict and POST /predict/batch: uploads in, the network's digit and sum out.

Where a request goes: app.forms.read_form (the multipart body, as bytes) -> a large image is
prepared in the preprocessing pool (app.imaging.prepare_batch) -> app.inference.DynamicBatcher
(small PNGs are decoded there, in the batch; one forward pass for many requests) -> JSON.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic_core import to_json

from app.admission import OVERLOADED_MESSAGE
from app.api.deps import runtime_of
from app.errors import (
    NOT_A_DIGIT_MESSAGE,
    InternalError,
    NoDigit,
    Overloaded,
    ServiceError,
    error_body,
    request_id_of,
)
from app.forms import FormFieldError, query_flag, read_form
from app.imaging import is_light, png_base64, prepare_batch
from app.inference import Answer, Upload
from app.schemas import (
    BATCH_FORM,
    INCLUDE_INPUT,
    PREDICT_FORM,
    BatchResponse,
    PredictResponse,
    error_responses,
)
from app.state import Runtime

router = APIRouter(tags=["predict"])


def routes() -> list[APIRoute]:
    """This module's routes (app.middleware.PredictFastPath calls their endpoints directly)."""
    return [route for route in router.routes if isinstance(route, APIRoute)]


def _admit(runtime: Runtime, images: int) -> None:
    """Refuse before decoding when the model's queue has no room: under overload, decoding images
    that the batcher will refuse anyway only deepens it. The batcher checks again on queueing."""
    if runtime.batcher.depth + images > runtime.batcher.max_queue:
        raise Overloaded(OVERLOADED_MESSAGE)


async def _uploads(runtime: Runtime, blobs: list[bytes]) -> list[Upload | ServiceError]:
    """Small PNGs go to the batcher as they are; larger images are prepared first, off the event
    loop, in the preprocessing pool (split across its threads), if its queue has room for them
    all (app/admission.py)."""
    heavy = [i for i, blob in enumerate(blobs) if not is_light(blob)]
    out: list[Upload | ServiceError] = list(blobs)
    if heavy:
        runtime.admission.admit_decoding(len(heavy))
        try:
            await _prepare(runtime, blobs, heavy, out)
        finally:
            runtime.admission.done_decoding(len(heavy))
    return out


async def _prepare(
    runtime: Runtime, blobs: list[bytes], heavy: list[int], out: list[Upload | ServiceError]
) -> None:
    """The images at `heavy` prepared in the preprocessing pool, into their places in `out`."""
    loop = asyncio.get_running_loop()
    max_pixels = runtime.settings.max_image_pixels
    size = -(-len(heavy) // max(1, min(len(heavy), runtime.preprocess_threads)))
    chunks = [[blobs[i] for i in heavy[at : at + size]] for at in range(0, len(heavy), size)]
    parts = await asyncio.gather(
        *(
            loop.run_in_executor(runtime.preprocess_pool, prepare_batch, chunk, max_pixels)
            for chunk in chunks
        )
    )
    for i, prepared in zip(heavy, (x for part in parts for x in part), strict=True):
        out[i] = prepared


def _prediction(answer: Answer, number: int, version: str, input_png: str | None) -> dict[str, Any]:
    """One PredictResponse, as the dict it serialises to (with what the model saw, if asked)."""
    digit, digit_confidence, total, sum_confidence, _ = answer.prediction
    body: dict[str, Any] = {
        "digit": digit,
        "digit_confidence": digit_confidence,  # rounded with the whole batch (app.inference)
        "sum": total,
        "sum_confidence": sum_confidence,
        "number": number,
        "consistent": total == digit + number,
        "model_version": version,
    }
    if input_png is not None:
        body["input_png"] = input_png
    return body


def _not_a_digit(field: str, input_png: str | None) -> NoDigit:
    """The model's not-a-digit head refused this image: the error, with what it saw if asked."""
    error = NoDigit(NOT_A_DIGIT_MESSAGE, field=field, rule="model")
    if input_png is not None:
        error.details["input_png"] = input_png
    return error


def _input_pngs(outcome: list[Answer | ServiceError]) -> list[str | None]:
    """What the model saw, as base64 PNGs, for the answered images of a batch (in a thread: a
    PNG each, for up to DIGITSUM_MAX_BATCH_IMAGES images, is too long for the event loop)."""
    return [None if isinstance(x, ServiceError) else png_base64(x.pixels) for x in outcome]


def _json(body: dict[str, Any]) -> Response:
    # Plain dicts through pydantic-core's serialiser: pydantic models built and validated per
    # image cost more than the rest of a batch's bookkeeping, and the standard library's json
    # took 4x as long (130 us for 64 answers). The schema is still response_model's below
    # (/docs), and tests validate real answers against it.
    return Response(to_json(body), media_type="application/json")


@router.post(
    "/predict",
    response_model=PredictResponse,
    summary="Read the digit in an image and add a number to it",
    responses=error_responses(400, 408, 413, 415, 422, 500, 503),
    openapi_extra={**PREDICT_FORM, **INCLUDE_INPUT},
)
async def predict(request: Request) -> Response:
    """Send `image` (a file) and `number` (0..9) as multipart/form-data. The answer's `sum` comes
    from the network's own sum head; `consistent` says whether it equals `digit + number`."""
    include_input = query_flag(request, "include_input")
    runtime = runtime_of(request)
    form = await read_form(request, runtime.settings.max_form_parts)
    image, number = form.file("image"), form.number("number")
    _admit(runtime, 1)
    (upload,) = await _uploads(runtime, [image])
    if isinstance(upload, ServiceError):
        raise upload
    answer = await runtime.batcher.predict(upload, number)
    input_png = png_base64(answer.pixels) if include_input else None  # one image: on the loop
    if answer.prediction.no_digit:
        raise _not_a_digit("image", input_png)
    return _json(_prediction(answer, number, runtime.model.version, input_png))


@router.post(
    "/predict/batch",
    response_model=BatchResponse,
    summary="Many images with their numbers in one request, answered in order",
    responses=error_responses(400, 408, 413, 422, 500, 503),
    openapi_extra={**BATCH_FORM, **INCLUDE_INPUT},
)
async def predict_batch(request: Request) -> Response:
    """Repeat the `images` and `numbers` fields once per pair (at most DIGITSUM_MAX_BATCH_IMAGES).
    A bad image fails only its own entry, which carries its own error."""
    include_input = query_flag(request, "include_input")
    runtime = runtime_of(request)
    form = await read_form(request, runtime.settings.max_form_parts)
    images, numbers = form.files("images"), form.numbers("numbers")
    limit = runtime.settings.max_batch_images
    if not images:
        raise FormFieldError("images: field required (one or more image files)", "images")
    if len(images) > limit:
        raise FormFieldError(f"at most {limit} images per request, got {len(images)}", "images")
    if len(numbers) != len(images):
        raise FormFieldError(
            f"{len(images)} images but {len(numbers)} numbers; send one number per image",
            "numbers",
        )
    _admit(runtime, len(images))
    uploads = await _uploads(runtime, images)
    good = [i for i, u in enumerate(uploads) if not isinstance(u, ServiceError)]
    answers = await runtime.batcher.predict_many(
        [uploads[i] for i in good],  # type: ignore[misc]
        [numbers[i] for i in good],
    )
    outcome: list[Answer | ServiceError] = list(uploads)  # type: ignore[arg-type]
    for i, answer in zip(good, answers, strict=True):
        outcome[i] = answer
    request_id = request_id_of(request)
    version = runtime.model.version
    pngs = await asyncio.to_thread(_input_pngs, outcome) if include_input else [None] * len(outcome)
    results: list[dict[str, Any]] = []
    for i, (item, number, input_png) in enumerate(zip(outcome, numbers, pngs, strict=True)):
        if not isinstance(item, ServiceError) and item.prediction.no_digit:
            item = _not_a_digit(f"images[{i}]", input_png)
        if isinstance(item, ServiceError):
            if isinstance(item, InternalError):
                item.report(request_id)
            error = error_body(item.code, item.message, request_id, f"images[{i}]", item.details)
            results.append({"index": i, **error})
        else:
            prediction = _prediction(item, number, version, input_png)
            results.append({"index": i, "prediction": prediction})
    return _json({"results": results})
