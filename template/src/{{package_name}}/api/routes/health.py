from __future__ import annotations

from fastapi import APIRouter, Response, status

from ...schemas.health import Liveness, Readiness
from ..deps import LifecycleDep, ReadinessServiceDep

router = APIRouter(prefix="/health", tags=["health"])


@router.get("", responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": Liveness}})
async def liveness(response: Response, lifecycle: LifecycleDep) -> Liveness:
    """The process is up. Touches no dependency, so a slow database never restarts it;
    503 once it is shutting down."""
    if lifecycle.draining:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return Liveness(status="shutting_down")
    return Liveness(status="ok")


@router.get(
    "/ready",
    responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": Readiness}},
)
async def readiness(
    response: Response, lifecycle: LifecycleDep, service: ReadinessServiceDep
) -> Readiness:
    """Every dependency answers a ping; 503 (with each check's status) when one does not,
    and as soon as the process is shutting down, so no new traffic is routed to it."""
    if lifecycle.draining:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return Readiness(status="shutting_down", checks={})
    report = await service.check()
    if report.status != "ok":
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return report
