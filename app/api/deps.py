"""Typed dependencies for the routes: the service state, and "ready or 503"."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.errors import Draining, NotReady
from app.state import Phase, Runtime, ServiceState


async def get_service(request: Request) -> ServiceState:
    service: ServiceState = request.app.state.service
    return service


ServiceDep = Annotated[ServiceState, Depends(get_service)]


def runtime_of(request: Request) -> Runtime:
    """The loaded model and its batcher, or 503 with Retry-After while loading, or while draining
    for requests that started after the drain began (those in flight before it are served).

    A plain call rather than a FastAPI dependency on the prediction routes, whose per-request
    cost is measured in microseconds (bench/).
    """
    service: ServiceState = request.app.state.service
    started = request.scope.get("state", {}).get("started")  # set by RequestContextMiddleware
    if service.phase is Phase.DRAINING and not service.started_before_drain(started):
        raise Draining("this instance is shutting down; retry on another")
    if service.phase is Phase.LOADING or service.runtime is None:
        raise NotReady("the model is still loading; retry shortly")
    return service.runtime


async def get_runtime(request: Request) -> Runtime:
    return runtime_of(request)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
