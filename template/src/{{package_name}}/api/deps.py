"""`Annotated` dependencies shared by the routers, so route signatures read like sentences."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..resources import Resources
from ..services.health import ReadinessService


def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


def get_readiness_service(resources: ResourcesDep) -> ReadinessService:
    return ReadinessService.for_resources(resources)


ReadinessServiceDep = Annotated[ReadinessService, Depends(get_readiness_service)]
