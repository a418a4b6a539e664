from __future__ import annotations

from fastapi import APIRouter, Response, status

from ...schemas.health import Liveness, Readiness
from ..deps import ReadinessServiceDep

router = APIRouter(prefix="/health", tags=["health"])


@router.get("")
async def liveness() -> Liveness:
    """The process is up. Touches no dependency, so a slow database never restarts it."""
    return Liveness(status="ok")


@router.get(
    "/ready",
    responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": Readiness}},
)
async def readiness(response: Response, service: ReadinessServiceDep) -> Readiness:
    """Every dependency answers a ping; 503 (with each check's status) when one does not."""
    report = await service.check()
    if report.status != "ok":
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return report
