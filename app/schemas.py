"""Request and response models of the API, with the examples shown in /docs."""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class PredictResponse(BaseModel):
    """The network's answer for one (image, number) pair."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "digit": 7,
                    "digit_confidence": 0.9998,
                    "sum": 12,
                    "sum_confidence": 0.9997,
                    "number": 5,
                    "consistent": True,
                    "model_version": "1.0.0",
                }
            ]
        }
    )

    digit: int = Field(ge=0, le=9, description="the digit read from the image (digit head)")
    digit_confidence: float = Field(ge=0, le=1, description="softmax probability of `digit`")
    sum: int = Field(ge=0, le=18, description="digit + number as predicted by the sum head")
    sum_confidence: float = Field(ge=0, le=1, description="softmax probability of `sum`")
    number: int = Field(ge=0, le=9, description="the number that was sent")
    consistent: bool = Field(description="whether sum == digit + number")
    model_version: str
    input_png: str | None = Field(
        None, description="base64 PNG of the 28x28 image the model saw (with include_input=true)"
    )


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. invalid_image")
    message: str = Field(description="what went wrong, for a person")
    field: str | None = Field(None, description="the request field at fault, if one is")
    request_id: str = Field(description="also sent as the X-Request-ID header")
    input_png: str | None = Field(
        None,
        description="no_digit only, with include_input=true: base64 PNG of the 28x28 image the "
        "model saw",
    )


class ErrorResponse(BaseModel):
    """Every error has this shape."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "code": "invalid_image",
                        "message": "the uploaded file is not an image",
                        "field": "image",
                        "request_id": "4f6c2a0e9b1d4c7e",
                    }
                },
                {
                    "error": {
                        "code": "no_digit",
                        "message": "I don't see a digit in this image: it looks blank.",
                        "field": "image",
                        "request_id": "9a1b7c3d5e2f4a6b",
                    }
                },
            ]
        }
    )

    error: ErrorDetail


class BatchItem(BaseModel):
    """One entry of a batch answer: a prediction or that entry's own error."""

    index: int = Field(ge=0, description="position of the image in the request")
    prediction: PredictResponse | None = None
    error: ErrorDetail | None = None


class BatchResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "results": [
                        {
                            "index": 0,
                            "prediction": {
                                "digit": 3,
                                "digit_confidence": 0.999,
                                "sum": 5,
                                "sum_confidence": 0.998,
                                "number": 2,
                                "consistent": True,
                                "model_version": "1.0.0",
                            },
                        },
                        {
                            "index": 1,
                            "error": {
                                "code": "invalid_image",
                                "message": "the uploaded file is not an image",
                                "field": "images[1]",
                                "request_id": "4f6c2a0e9b1d4c7e",
                            },
                        },
                    ]
                }
            ]
        }
    )

    results: list[BatchItem]


class HealthResponse(BaseModel):
    status: str = Field(description="alive, ready, loading or draining")


class ModelInfo(BaseModel):
    """The model card stored inside the checkpoint, and how this process runs it."""

    model_config = ConfigDict(extra="allow")

    version: str
    sha256: str = Field(description="SHA-256 of the checkpoint file")
    device: str = Field(description="where this process runs the model")
    engine: Literal["onnxruntime", "torchscript"] = Field(
        description="what runs its forward pass (DIGITSUM_CPU_ENGINE on a CPU; TorchScript on CUDA)"
    )
    card: dict[str, Any] = Field(description="the full card: metrics, training config, data")


def _form(properties: dict[str, Any], title: str) -> dict[str, Any]:
    """An OpenAPI request body of multipart/form-data with these fields, all required."""
    schema = {"type": "object", "title": title, "properties": properties, "required": [*properties]}
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    }


_FILE = {"type": "string", "contentMediaType": "application/octet-stream"}
_NUMBER = {"type": "integer", "minimum": 0, "maximum": 9}

# The request bodies of /predict and /predict/batch, as FastAPI would describe File() and Form()
# parameters; the routes read the body themselves (app/forms.py), so they are declared here.
PREDICT_FORM = _form(
    {
        "image": {
            **_FILE,
            "title": "Image",
            "description": (
                "the digit: PNG, JPEG, WebP, BMP, GIF, HEIC/HEIF or AVIF; a photo of ink on paper "
                "is fine"
            ),
        },
        "number": {**_NUMBER, "title": "Number", "description": "the number to add, 0..9"},
    },
    "PredictForm",
)
BATCH_FORM = _form(
    {
        "images": {
            "type": "array",
            "items": _FILE,
            "minItems": 1,
            "title": "Images",
            "description": "the images, in order (at most DIGITSUM_MAX_BATCH_IMAGES)",
        },
        "numbers": {
            "type": "array",
            "items": _NUMBER,
            "minItems": 1,
            "title": "Numbers",
            "description": "one number 0..9 per image, same order",
        },
    },
    "BatchForm",
)
# The query parameter of both routes, as FastAPI describes a `bool` Query() parameter; the
# routes read it themselves (app.forms.query_flag), so that both ways to them run the same code.
_INCLUDE_INPUT_TEXT = "also return the 28x28 image the model saw, as a base64 PNG"
INCLUDE_INPUT: dict[str, Any] = {
    "parameters": [
        {
            "name": "include_input",
            "in": "query",
            "required": False,
            "schema": {
                "type": "boolean",
                "description": _INCLUDE_INPUT_TEXT,
                "default": False,
                "title": "Include Input",
            },
            "description": _INCLUDE_INPUT_TEXT,
        }
    ]
}


def set_batch_limit(openapi: dict[str, Any], max_images: int) -> dict[str, Any]:
    """`openapi` with the batch form's arrays capped at `max_images` (the service's setting,
    DIGITSUM_MAX_BATCH_IMAGES), in place; routes are shared by every app, settings are not."""
    operation = openapi["paths"]["/predict/batch"]["post"]
    # FastAPI puts the route's openapi_extra (BATCH_FORM) in the schema as it is: copied first.
    operation["requestBody"] = body = copy.deepcopy(operation["requestBody"])
    for field in body["content"]["multipart/form-data"]["schema"]["properties"].values():
        field["maxItems"] = max_images
    return openapi


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the given error statuses, all with ErrorResponse."""
    text = {
        400: "Not an image, truncated, undecodable, too many pixels, or a malformed form body",
        408: "The body arrived too slowly",
        413: "Body over the upload limit",
        415: "An image format outside PNG, JPEG, WebP, BMP, GIF, HEIC/HEIF, AVIF",
        422: "`validation_error`: a missing, non-integer or out-of-range field (named in "
        "`field`); `no_digit`: the image holds no digit to read (blank paper, only lines or "
        "noise, or a letter, symbol or scribble), so no digit and no sum are guessed",
        500: "Unexpected failure; the request id finds the traceback in the log",
        503: "Loading, draining or at capacity; see Retry-After",
    }
    return {s: {"model": ErrorResponse, "description": text[s]} for s in statuses}
