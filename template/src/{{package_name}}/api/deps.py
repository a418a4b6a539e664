"""`Annotated` dependencies shared by the routers, so route signatures read like sentences.

Dependencies are `async def` even when they await nothing: FastAPI runs a plain `def` one
in a worker thread, a hand-off that costs more than building any of these objects.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection  # noqa: TC002 (FastAPI reads it)

from ..lifecycle import Lifecycle
from ..resources import Resources
from ..services.completions import CompletionService
from ..services.health import ReadinessService
from ..settings import Settings


async def get_resources(connection: HTTPConnection) -> Resources:
    resources: Resources = connection.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_lifecycle(connection: HTTPConnection) -> Lifecycle:
    lifecycle: Lifecycle = connection.app.state.lifecycle
    return lifecycle


LifecycleDep = Annotated[Lifecycle, Depends(get_lifecycle)]


async def get_readiness_service(resources: ResourcesDep) -> ReadinessService:
    return ReadinessService.for_resources(resources)


ReadinessServiceDep = Annotated[ReadinessService, Depends(get_readiness_service)]


async def get_settings(resources: ResourcesDep) -> Settings:
    return resources.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_completion_service(resources: ResourcesDep) -> CompletionService:
    return CompletionService.from_settings(resources.llm, resources.settings)


CompletionServiceDep = Annotated[CompletionService, Depends(get_completion_service)]
