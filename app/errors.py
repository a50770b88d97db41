"""Our exceptions, and the one place that maps every failure to a JSON answer of one shape.

{"error": {"code": "invalid_image", "message": "...", "field": "image", "request_id": "..."}}
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import metrics

log = logging.getLogger("digitsum")


INTERNAL_ERROR_MESSAGE = "internal error; quote the request id when reporting it"


class ServiceError(Exception):
    """A failure with a stable code, an HTTP status and a message safe to show the caller."""

    status = 500
    code = "internal_error"
    retry_after: int | None = None

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        # More keys for the error object, e.g. the image the model saw (no_digit, when the
        # caller asked for it with include_input).
        self.details: dict[str, Any] = {}


class InvalidImage(ServiceError):
    status, code = 400, "invalid_image"


class ImageTooLarge(ServiceError):
    status, code = 400, "image_too_large"


class ImageTooSmall(ServiceError):
    """Fewer pixels on a side than any digit can be drawn in (app.imaging.MIN_IMAGE_SIDE)."""

    status, code = 422, "image_too_small"


class UnsupportedFormat(ServiceError):
    status, code = 415, "unsupported_format"


class NoDigit(ServiceError):
    """The image holds no digit that the service can read: blank paper, only ruling lines or
    noise (seen by app.imaging), or a shape the model says is not a digit (app.inference)."""

    status, code = 422, "no_digit"

    def __init__(self, message: str, *, field: str | None = None, rule: str) -> None:
        super().__init__(message, field=field)
        # Which rule refused: one of app.ink.RULES, "blank_frame" (nothing left to frame),
        # or "model" (its not-a-digit head). For logs and the regression set, not the answer.
        self.rule = rule


NOT_A_DIGIT_MESSAGE = (
    "I don't see a digit here: what is in the image does not look like a digit 0-9 "
    "(a letter, a symbol or a scribble?). Send one handwritten digit."
)


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"


class BodyTimeout(ServiceError):
    status, code = 408, "request_timeout"


class Overloaded(ServiceError):
    status, code, retry_after = 503, "overloaded", 1


class NotReady(ServiceError):
    status, code, retry_after = 503, "not_ready", 2


class Draining(ServiceError):
    status, code, retry_after = 503, "draining", 5


class InferenceTimeout(ServiceError):
    status, code, retry_after = 503, "inference_timeout", 1


class InternalError(ServiceError):
    """Our own failure on one input (preparing one image, or one image's forward pass), kept in
    that input's place so that only its request, or its batch entry, fails: a 500 that says
    nothing about internals. `report` logs the traceback once, under the request's id, and
    counts it by stage; the answer is made by the same code as every other error."""

    status, code = 500, "internal_error"

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(INTERNAL_ERROR_MESSAGE)
        self.stage = stage
        self.cause = cause
        self._reported = False

    def report(self, request_id: str) -> None:
        if self._reported:
            return
        self._reported = True
        metrics.INTERNAL_ERRORS.labels(self.stage).inc()
        log.error(
            "%s failed on one input",
            self.stage,
            exc_info=(type(self.cause), self.cause, self.cause.__traceback__),
            extra={"request_id": request_id, "stage": self.stage},
        )


class ModelLoadError(RuntimeError):
    """The checkpoint is missing, corrupt or not ours: start-up stops with this message."""


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


def error_body(
    code: str,
    message: str,
    request_id: str,
    field: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The body of every error answer, a whole response's or one batch entry's, counted in
    digitsum_errors_total by code: the one place either is done. `details` adds keys to the
    error object (no_digit's input_png)."""
    metrics.ERRORS.labels(code).inc()
    error = {"code": code, "message": message, "field": field, "request_id": request_id}
    return {"error": error | details if details else error}


def error_json(
    status: int,
    code: str,
    message: str,
    request_id: str,
    *,
    field: str | None = None,
    retry_after: int | None = None,
    headers: dict[str, str] | None = None,
    details: dict[str, Any] | None = None,
) -> JSONResponse:
    """An error answer (error_body) with its status and, for a 503, its Retry-After."""
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    body = error_body(code, message, request_id, field, details)
    return JSONResponse(body, status_code=status, headers=headers or None)


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    retry_after: int | None = None,
    details: dict[str, Any] | None = None,
) -> JSONResponse:
    return error_json(
        status,
        code,
        message,
        request_id_of(request),
        field=field,
        retry_after=retry_after,
        details=details,
    )


def service_error_response(request: Request, exc: ServiceError) -> JSONResponse:
    """The answer to one of our own errors, wherever it is raised."""
    if isinstance(exc, InternalError):
        exc.report(request_id_of(request))
    return error_response(
        request, exc.status, exc.code, exc.message, exc.field, exc.retry_after, exc.details
    )


def _field_of(loc: tuple[int | str, ...]) -> str | None:
    # ("body", "number") -> "number"; ("query", "include_input") -> "include_input"
    names = [str(part) for part in loc if part not in ("body", "query", "path", "header")]
    return ".".join(names) or None


def install_error_handlers(app: FastAPI) -> None:
    """Map our exceptions, validation errors and HTTP errors to the one JSON shape."""

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return service_error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        field = _field_of(tuple(first.get("loc", ())))
        detail = str(first.get("msg", "invalid request"))
        message = f"{field}: {detail}" if field else detail
        return error_response(request, 422, "validation_error", message, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, ServiceError):
            # FastAPI wraps any failure while parsing the body in "400 error parsing the body";
            # ours (body over the limit, body too slow) keep their own status and code.
            return await _service_error(request, exc.__cause__)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        response = error_response(request, exc.status_code, code, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's ServerErrorMiddleware answers with this, then re-raises: the traceback is
        # logged with the request id by app.middleware.RequestContextMiddleware, which also
        # answers the same way for failures outside FastAPI's stack (the prediction fast path).
        return error_response(request, 500, "internal_error", INTERNAL_ERROR_MESSAGE)
