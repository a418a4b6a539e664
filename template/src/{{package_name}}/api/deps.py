"""`Annotated` dependencies shared by the routers, so route signatures read like sentences."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection  # noqa: TC002 (FastAPI reads it)

from ..lifecycle import Lifecycle
from ..resources import Resources
from ..services.completions import CompletionService
from ..services.health import ReadinessService
from ..settings import Settings


def get_resources(connection: HTTPConnection) -> Resources:
    resources: Resources = connection.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


def get_lifecycle(connection: HTTPConnection) -> Lifecycle:
    lifecycle: Lifecycle = connection.app.state.lifecycle
    return lifecycle


LifecycleDep = Annotated[Lifecycle, Depends(get_lifecycle)]


def get_readiness_service(resources: ResourcesDep) -> ReadinessService:
    return ReadinessService.for_resources(resources)


ReadinessServiceDep = Annotated[ReadinessService, Depends(get_readiness_service)]


def get_settings(resources: ResourcesDep) -> Settings:
    return resources.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_completion_service(resources: ResourcesDep) -> CompletionService:
    return CompletionService.from_settings(resources.llm, resources.settings)


CompletionServiceDep = Annotated[CompletionService, Depends(get_completion_service)]
