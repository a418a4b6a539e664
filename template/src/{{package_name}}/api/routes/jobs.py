from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Response, status

from ...errors import error_responses
from ...llm.errors import PROVIDER_ERROR_STATUSES
from ...schemas.jobs import JobCreate, JobErrorOut, JobOut
from ...services.job_kinds import JOB_KINDS
from ...services.jobs import JobService
from ..deps import ResourcesDep
from ..limits import LIMITED_ROUTE_ERRORS, LimitedPrincipalDep

if TYPE_CHECKING:
    from ...job_store import Job

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=LIMITED_ROUTE_ERRORS)


async def get_job_service(principal: LimitedPrincipalDep, resources: ResourcesDep) -> JobService:
    return JobService(resources, resources.job_queue, principal)


JobServiceDep = Annotated[JobService, Depends(get_job_service)]


def job_out(job: Job) -> JobOut:
    return JobOut(
        id=job.id,
        kind=job.kind,
        status=job.status,
        progress=job.progress,
        attempts=job.attempts,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        result=job.result,
        error=JobErrorOut(code=job.error.code, message=job.error.message) if job.error else None,
    )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    # A job is checked as its requests would be, before anything runs.
    responses=error_responses(*PROVIDER_ERROR_STATUSES),
)
async def submit_job(
    body: JobCreate,
    service: JobServiceDep,
    principal: LimitedPrincipalDep,
    resources: ResourcesDep,
    response: Response,
) -> JobOut:
    """Queue a long-running job; poll `GET /v1/jobs/{id}` for its progress and result."""
    await JOB_KINDS[body.kind].check(body, resources, principal)
    job = await service.submit(body.kind, body.model_dump(mode="json"))
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_out(job)


@router.get("/{job_id}", responses=error_responses(404))
async def get_job(job_id: str, service: JobServiceDep) -> JobOut:
    return job_out(await service.get(job_id))


@router.delete("/{job_id}", responses=error_responses(404, 409))
async def cancel_job(job_id: str, service: JobServiceDep) -> JobOut:
    """Cancel a job that has not finished (409 for one that has)."""
    return job_out(await service.cancel(job_id))
