"""Pure-ASGI middlewares (not BaseHTTPMiddleware, so they add microseconds, not a task each):

- RequestContextMiddleware, around every request: request id, body limits, metrics, access log.
- PredictFastPath: POST /predict and /predict/batch go from here straight to their endpoints.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics
from app.admission import Admission
from app.errors import (
    INTERNAL_ERROR_MESSAGE,
    BodyTimeout,
    Overloaded,
    PayloadTooLarge,
    ServiceError,
    error_json,
    service_error_response,
)

access_log = logging.getLogger("digitsum.access")
log = logging.getLogger("digitsum")

_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class RequestIds:
    """Ids unique across processes and restarts (16 random hex digits drawn once per process)
    and cheap per request (a counter): uuid4() reads the OS's random source every time, which
    profiling showed at a tenth of the event loop's time under load."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


# A body that keeps every pause under the per-chunk timeout can still take forever (one byte a
# second, say). Once the body has been arriving for longer than that timeout, it must also have
# averaged this rate, as Apache's mod_reqtimeout does with its MinRate (there 500 bytes/s).
MIN_BODY_BYTES_PER_S = 1024


# A stalled body is cut off between body_timeout_s and this fraction of it later: the bodies
# being read are checked together, every body_timeout_s / BODY_CHECKS_PER_TIMEOUT, by one timer
# per worker, rather than each read under its own asyncio.timeout (under load, setting and
# cancelling a timer per read cost the event loop nearly as much as parsing the form).
BODY_CHECKS_PER_TIMEOUT = 10


class BodyDeadlines:
    """Cuts off every body read of a worker that has waited longer than `timeout_s`: its task
    is cancelled, and the read raises BodyTimeout instead (as asyncio.timeout does, with one
    periodic check for all reads instead of a timer each)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._waiting: dict[asyncio.Task[Any], float] = {}  # read in progress -> since when
        self._expired: set[asyncio.Task[Any]] = set()  # cancelled here, not yet answered
        self._loop: asyncio.AbstractEventLoop | None = None
        self._check: asyncio.TimerHandle | None = None

    async def receive(self, receive: Receive) -> Message:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (a test client's): nothing carries over
            self._loop, self._check = loop, None
            self._waiting.clear()
            self._expired.clear()
        assert task is not None
        self._waiting[task] = loop.time()
        if self._check is None:
            self._check = loop.call_later(self._interval, self._cut_off)
        try:
            return await receive()
        except asyncio.CancelledError:
            if task not in self._expired:
                raise  # cancelled by someone else
            task.uncancel()
            raise BodyTimeout(f"the request body stalled for over {self.timeout_s:g} s") from None
        finally:
            del self._waiting[task]
            self._expired.discard(task)

    @property
    def _interval(self) -> float:
        return self.timeout_s / BODY_CHECKS_PER_TIMEOUT

    def _cut_off(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        for task, since in self._waiting.items():
            if now - since >= self.timeout_s and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        self._check = None
        if self._waiting:
            self._check = self._loop.call_later(self._interval, self._cut_off)


def _request_id_and_length(scope: Scope) -> tuple[str | None, str | None]:
    """X-Request-ID and Content-Length, in one pass over the headers."""
    request_id = length = None
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            request_id = value.decode("latin-1")
        elif key == b"content-length":
            length = value.decode("latin-1")
    return request_id, length


# Methods whose requests carry a body, and so go through admission (app/admission.py); the
# probes and /metrics are never refused for load.
_WITH_BODY = frozenset(("POST", "PUT", "PATCH"))


class RequestContextMiddleware:
    """Tags each request with an id (echoed as X-Request-ID), enforces the body size limit, a
    per-chunk body timeout and a minimum body rate without reading more than the limit, and
    records metrics and one structured access-log line."""

    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, body_timeout_s: float, admission: Admission
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.admission = admission
        self.ids = RequestIds()
        self.deadlines = BodyDeadlines(body_timeout_s)
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        client_id, declared = _request_id_and_length(scope)
        request_id = (
            client_id if client_id and _SAFE_REQUEST_ID.fullmatch(client_id) else self.ids.next()
        )
        state = scope.setdefault("state", {})
        state["request_id"], state["started"] = request_id, started
        status = 500
        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status, started_response = message["status"], True
                # as MutableHeaders(scope=message).append does it, without the object
                headers = message["headers"] = list(message.get("headers", ()))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
            await send(message)

        received, body_done, body_started = 0, False, 0.0
        admitted = False  # taken on by admission, which then counts its bytes until release
        counted = 0  # bytes of this request counted by admission

        async def receive_limited() -> Message:
            nonlocal received, body_done, body_started, counted
            if body_done:
                return await receive()
            body_started = body_started or time.perf_counter()
            message = await self.deadlines.receive(receive)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise PayloadTooLarge(self._too_large_message())
                if admitted and received > counted:  # more than declared (a chunked body)
                    extra, counted = received - counted, received
                    self.admission.add_bytes(extra)
                body_done = not message.get("more_body", False)
                elapsed = time.perf_counter() - body_started
                if (
                    not body_done
                    and elapsed > self.body_timeout_s
                    and received < MIN_BODY_BYTES_PER_S * elapsed
                ):
                    raise BodyTimeout(
                        f"the request body arrived slower than {MIN_BODY_BYTES_PER_S} bytes/s"
                    )
            return message

        try:
            length = int(declared) if declared is not None and declared.isdigit() else 0
            if length > self.max_body_bytes:
                too_large = PayloadTooLarge(self._too_large_message())
                await self._refuse_unread(too_large, scope, receive, send_with_id, request_id)
                return
            if scope["method"] in _WITH_BODY:
                try:
                    self.admission.admit_request(length)
                except Overloaded as exc:
                    await self._refuse_unread(exc, scope, receive, send_with_id, request_id)
                    return
                admitted, counted = True, length
            await self.app(scope, receive_limited, send_with_id)
        except ClientDisconnect:
            # The client hung up before its body arrived: nobody to answer, nothing of ours
            # failed. Counted under nginx's 499 ("client closed request").
            if not started_response:
                status = 499
        except Exception:
            # Our own failure: the traceback goes to the log under the request id; the caller
            # gets a 500 that says nothing about internals.
            log.exception("unhandled error", extra={"request_id": request_id})
            metrics.INTERNAL_ERRORS.labels("request").inc()
            status = 500
            if not started_response:
                response = error_json(500, "internal_error", INTERNAL_ERROR_MESSAGE, request_id)
                await response(scope, receive, send_with_id)
        finally:
            if admitted:
                self.admission.release(counted)
            self._record(scope, status, time.perf_counter() - started, request_id)

    def _too_large_message(self) -> str:
        return f"request body over the limit of {self.max_body_bytes:,} bytes"

    async def _refuse_unread(
        self, exc: ServiceError, scope: Scope, receive: Receive, send: Send, request_id: str
    ) -> None:
        # Answered from the headers: the body is never read, and the connection is closed.
        response = error_json(
            exc.status,
            exc.code,
            exc.message,
            request_id,
            retry_after=exc.retry_after,
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)

    def _record(self, scope: Scope, status: int, seconds: float, request_id: str) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        method = scope["method"]
        key = (path, method, status)
        series = self._series.get(key)
        if series is None:  # label lookups once per (route, method, status), not per request
            labels = (path, method, str(status))
            series = self._series[key] = (
                metrics.REQUESTS.labels(*labels),
                metrics.REQUEST_SECONDS.labels(*labels),
            )
        series[0].inc()
        series[1].observe(seconds)
        if access_log.isEnabledFor(logging.INFO):
            client = scope.get("client")
            access_log.info(
                "%s %s %d %.1fms",
                method,
                scope["path"],
                status,
                seconds * 1e3,
                extra={
                    "request_id": request_id,
                    "status": status,
                    "method": method,
                    "path": scope["path"],
                    "route": path,
                    "duration_ms": round(seconds * 1e3, 3),
                    "client": f"{client[0]}:{client[1]}" if client else None,
                },
            )


PredictEndpoint = Callable[[Request], Awaitable[Response]]


def route_path(scope: Scope) -> str:
    """The path the router matches: without the root path (`uvicorn --root-path /api` sends
    /api/predict with root_path /api), as Starlette's router strips it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
        return path[len(root) :]
    return path


class PredictFastPath:
    """Calls the prediction endpoints (app/api/routes/predict.py) directly for POST requests to
    their paths, skipping FastAPI's router, dependency solving and exception middlewares: a
    third more predictions per second at 64 connections (docs/performance.md). The endpoints
    take only the request and read their own body and query (app/forms.py), and our errors are
    answered by the same function the exception handler calls, so the answers are the router's
    (tests/app/test_dispatch.py); the routes stay declared in FastAPI for /docs, and their
    endpoints are the very functions called here.
    """

    def __init__(self, app: ASGIApp, *, routes: Sequence[APIRoute]) -> None:
        self.app = app
        self.routes = {route.path: route for route in routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.get(route_path(scope)) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # as the router would set it: metrics label by route
        request = Request(scope, receive)
        endpoint: PredictEndpoint = route.endpoint
        try:
            response = await endpoint(request)
        except ServiceError as exc:
            response = service_error_response(request, exc)
        await response(scope, receive, send)
