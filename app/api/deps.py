"""Typed dependencies for the routes: the service state, its settings, and 'ready or 503'."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.errors import Draining, NotReady
from app.state import Phase, ServiceState


def get_service(request: Request) -> ServiceState:
    service: ServiceState = request.app.state.service
    return service


ServiceDep = Annotated[ServiceState, Depends(get_service)]


def get_app_settings(service: ServiceDep) -> Settings:
    """The settings this app was created with (tests pass their own to create_app)."""
    return service.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_ready_service(service: ServiceDep) -> ServiceState:
    """The service, or 503 with Retry-After while it loads or drains."""
    if service.phase is Phase.LOADING:
        raise NotReady("the model is still loading; retry shortly")
    if service.phase is Phase.DRAINING:
        raise Draining("this instance is shutting down; retry on another")
    return service


ReadyServiceDep = Annotated[ServiceState, Depends(get_ready_service)]
