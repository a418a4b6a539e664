"""Long-running jobs: submitted by a caller, run by a worker, read back (or cancelled) by id.

A job's state lives in the `JobStore` (Redis); what runs it is a `JobQueue`, an in-process
runner or a pool of workers. Whatever runs a job calls `run_job_attempt`, which claims it
(so a job delivered twice runs once), keeps its lease while it works, stops when the job is
cancelled, and finishes it: succeeded, failed, or queued again after a transient failure,
for as many attempts as the settings allow.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar

import anyio
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import APIError
from ..job_store import FINISHED, Job, JobError
from ..llm.errors import ProviderError
from ..llm.gate import QueueTimeoutError
from ..metrics import JOBS_FINISHED, JOBS_SUBMITTED
from ..storage.ids import is_id, new_id
from .metering import admit_request, metered_completions

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from contextlib import AbstractAsyncContextManager

    from ..job_store import JobStore
    from ..resources import Resources
    from ..security.principal import Principal
    from ..settings import Settings
    from .metering import MeteredCompletions

logger = structlog.get_logger(__name__)

T = TypeVar("T")
Item = TypeVar("Item")


class JobQueue(Protocol):
    """What runs jobs: it is handed each new job, and told when one is cancelled."""

    # Who holds the lease of a job while it waits in this queue, when anyone does: the
    # in-process runner does, so that the jobs of a process that died are noticed.
    lease_holder: str | None
    # Whether a job whose worker died can go to another worker, rather than fail.
    requeues_lost_jobs: bool
    # The kinds of job it runs.
    kinds: Mapping[str, JobKind]

    def running(self, resources: Resources) -> AbstractAsyncContextManager[None]:
        """Run (or send off) jobs for as long as the service runs."""
        ...

    async def enqueue(self, job_id: str) -> None: ...

    def cancelled(self, job_id: str) -> None:
        """Stop the job now if it runs here (elsewhere, its worker notices at its lease)."""


class QueueUnavailableError(Exception):
    """The job could not be handed to what runs jobs (its broker did not answer)."""


class JobInterruptedError(Exception):
    """The job was cancelled (or taken from this worker) while it ran."""


@dataclass
class JobContext:
    """What a job's executor works with: its input, its caller's budget, its checkpoints."""

    job: Job
    resources: Resources
    store: JobStore
    token: str
    # Set when the job must stop (cancelled, taken over, the service stopping): it stops
    # before its next item, rather than being cancelled in the middle of a call.
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    # Bounds the job's items in flight (completions, batches of embeddings).
    slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.resources.settings.jobs_concurrency)

    @property
    def settings(self) -> Settings:
        return self.resources.settings

    def completions(self) -> MeteredCompletions:
        """LLM calls charged to the job's caller, against its tier's limits."""
        return metered_completions(self.resources, self.job.principal)

    async def admit(self) -> None:
        """Count one request against the caller's rate limit, as the same call over HTTP,
        but in a bucket of the jobs' own: a batch never uses up the requests its caller
        makes meanwhile (reading this job, say). Tokens are the caller's one budget."""
        await admit_request(self.job.principal, self.resources, requests="jobs-rpm")

    async def within_limits(self, call: Callable[[], Awaitable[T]]) -> T:
        """The call, waited for while the caller is over its rate limit (up to the
        setting), as an HTTP caller would retry after `Retry-After`."""
        waited = 0.0
        while True:
            try:
                return await call()
            except APIError as error:
                if error.code != "rate_limit_exceeded":
                    raise
                delay = float(error.headers.get("Retry-After", "1"))
                if waited + delay > self.settings.jobs_rate_limit_max_wait:
                    raise
            await asyncio.sleep(delay)
            waited += delay

    async def for_each(
        self, items: Sequence[tuple[int, Item]], work: Callable[[int, Item], Awaitable[None]]
    ) -> None:
        """`work` for each item, `jobs_concurrency` at a time. After a failure or a stop, the
        items already running finish their call and no more start; then the first failure is
        raised. Nothing is cancelled in the middle of a call, where a database or Redis
        client could be left with a connection in an unknown state."""
        failures: list[Exception] = []

        async def one(index: int, item: Item) -> None:
            async with self.slots:
                if failures or self.stop.is_set():
                    return
                try:
                    await work(index, item)
                except Exception as error:  # noqa: BLE001 (raised once the others are done)
                    failures.append(error)

        await asyncio.gather(*(one(index, item) for index, item in items))
        if failures:
            raise failures[0]
        self.check()

    def check(self) -> None:
        """Raise when the job must stop: between items, never in the middle of one."""
        if self.stop.is_set():
            raise JobInterruptedError("stopped")

    async def finished_items(self) -> dict[int, Any]:
        """Items an earlier attempt finished: a job run again does only the rest."""
        return await self.store.items(self.job.id)

    async def save_item(self, index: int, value: Any, *, total: int) -> None:
        self.check()
        # A saved item is never run again, so what its calls cost must be written first.
        await self.resources.usage.flush()
        status = await self.store.save_item(
            self.job.id, token=self.token, index=index, value=value, total=total
        )
        if status != "running":
            raise JobInterruptedError(status)

    async def report_progress(self, progress: float) -> None:
        self.check()
        status = await self.store.set_progress(self.job.id, token=self.token, progress=progress)
        if status != "running":
            raise JobInterruptedError(status)


def owner_of(job: Job) -> str:
    """Whose share of the job runners a job takes: its caller as the rate limits know it (a
    user; without authentication, a client address)."""
    return job.principal.rate_limit_key


# Runs one kind of job and returns its result, which must serialise to JSON.
Executor: TypeAlias = Callable[[JobContext], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class JobKind:
    # Refuses (with an APIError) what could not run, before the job is queued.
    check: Callable[[Any, Resources, Principal], Awaitable[None]]
    run: Executor
    # Told when a job of this kind ends without succeeding: failed, cancelled, or lost with
    # its worker (then its executor could not say so itself).
    on_failure: Callable[[Job, Resources, JobError], Awaitable[None]] | None = None


# Redis, or any server reached over a socket, that did not answer.
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def is_transient(error: BaseException, resources: Resources) -> bool:
    """Whether another attempt, later, may succeed: a server was unreachable, or the
    provider failed in a way worth retrying."""
    if isinstance(error, ProviderError):
        return error.retryable
    if isinstance(error, QueueTimeoutError):
        return True
    return isinstance(error, _UNREACHABLE) or resources.database.is_unavailable(error)


def job_error(error: BaseException, resources: Resources) -> JobError:
    """What the caller is told about a failure."""
    if isinstance(error, APIError | ProviderError):
        return JobError(error.code or "invalid_request", error.message)
    if is_transient(error, resources):
        return JobError("service_unavailable", "A server the job needs could not be reached")
    return JobError("internal_error", "The job failed unexpectedly; it has been logged")


WORKER_LOST = JobError("worker_lost", "The process running this job stopped before it finished")
WORKER_STOPPED = JobError("worker_stopped", "The service stopped while this job was running")
CANCELLED = JobError("cancelled", "The job was cancelled")


def retry_delay(settings: Settings, attempts: int) -> float:
    """Exponential backoff: base, 2 x base, 4 x base... capped."""
    backoff = settings.jobs_retry_base_delay * float(2 ** (attempts - 1))
    return min(settings.jobs_retry_max_delay, backoff)


async def run_job_attempt(
    resources: Resources,
    job_id: str,
    *,
    token: str,
    kinds: Mapping[str, JobKind],
    keep_lease_between_attempts: bool,
    stop: asyncio.Event | None = None,
) -> float | None:
    """Run the job if it can be claimed. Returns the seconds to wait before its next
    attempt when a transient failure queued it again; None when there is nothing more to
    do (it finished, was cancelled, or another worker has it)."""
    settings = resources.settings
    store = resources.jobs
    lease = settings.jobs_lease_seconds
    claim = await store.claim(job_id, token=token, lease_seconds=lease)
    log = logger.bind(job_id=job_id, attempt=claim.attempts)
    if not claim.claimed:
        log.info("job_not_claimed", status=claim.status)
        return None
    job = await store.get(job_id)
    if job is None:  # expired between the claim and the read: nothing left to run
        return None
    kind = kinds[job.kind]
    context = JobContext(job, resources, store, token, stop or asyncio.Event())
    log = log.bind(kind=job.kind)
    log.info("job_started")
    finished = asyncio.Event()
    keeper = asyncio.create_task(
        _keep_lease(store, job_id, token, lease, stop=context.stop, finished=finished)
    )
    try:
        result = await kind.run(context)
    except asyncio.CancelledError:
        # Stopped from outside (the service shutting down); its queue has failed it already
        # when it could, and a job that is still ours is failed here.
        with anyio.CancelScope(shield=True):
            if await store.finish(job_id, token=token, status="failed", error=WORKER_STOPPED):
                await failed(kind, job, resources, WORKER_STOPPED)
        log.warning("job_stopped_by_shutdown")
        raise
    except Exception as error:  # noqa: BLE001 (every failure ends the attempt, and is told)
        if isinstance(error, JobInterruptedError):
            log.info("job_interrupted", status=str(error))
            return None
        return await _failed_attempt(
            resources, kind, job, claim.attempts, token, error, keep_lease_between_attempts
        )
    finally:
        finished.set()
        await keeper
    # Written before the job is told finished: whoever waited for it can read what it cost.
    await resources.usage.flush()
    if await store.finish(job_id, token=token, status="succeeded", result=result):
        JOBS_FINISHED.labels(kind=job.kind, status="succeeded").inc()
    log.info("job_succeeded")
    return None


async def _failed_attempt(
    resources: Resources,
    kind: JobKind,
    job: Job,
    attempts: int,
    token: str,
    error: BaseException,
    keep_lease: bool,
) -> float | None:
    settings = resources.settings
    store = resources.jobs
    log = logger.bind(job_id=job.id, kind=job.kind, attempt=attempts)
    described = job_error(error, resources)
    if is_transient(error, resources) and attempts < settings.jobs_max_attempts:
        delay = retry_delay(settings, attempts)
        await store.release(
            job.id,
            token=token,
            error=described,
            keep_lease_seconds=settings.jobs_lease_seconds + delay if keep_lease else None,
        )
        log.warning("job_attempt_failed", error=described.message, retry_in=delay)
        return delay
    if described.code == "internal_error":
        log.error("job_failed", exc_info=error)
    else:
        log.warning("job_failed", error=described.message)
    # The kind hears of it first: whoever reads the failed job then sees its consequences
    # (a document marked failed with it).
    await failed(kind, job, resources, described)
    await store.finish(job.id, token=token, status="failed", error=described)
    return None


async def failed(kind: JobKind, job: Job, resources: Resources, error: JobError) -> None:
    """Count the job as ended, and tell its kind that it will not succeed; a failure to
    listen is only logged."""
    status = "cancelled" if error is CANCELLED else "failed"
    JOBS_FINISHED.labels(kind=job.kind, status=status).inc()
    if kind.on_failure is None:
        return
    try:
        await kind.on_failure(job, resources, error)
    except Exception:
        logger.exception("job_failure_hook_failed", job_id=job.id, kind=job.kind)


async def _keep_lease(
    store: JobStore,
    job_id: str,
    token: str,
    lease: float,
    *,
    stop: asyncio.Event,
    finished: asyncio.Event,
) -> None:
    """Renew the lease until the attempt is finished; tell the work to stop when the job
    is no longer ours (cancelled, or taken over after a lease that passed)."""
    while not await stopped_within(finished, lease / 3):
        try:
            [status] = await store.renew([job_id], token=token, lease_seconds=lease)
        except RedisError:
            # Redis is away: keep working; a lease that passes meanwhile gives the job up.
            continue
        if status != "running":
            stop.set()
            return


async def sweep_lost_jobs(resources: Resources, queue: JobQueue) -> None:
    """Find the jobs whose lease passed (their process died) and requeue or fail them."""
    store = resources.jobs
    for job_id in await store.expired():
        outcome = await store.expire(
            job_id,
            requeue=queue.requeues_lost_jobs,
            max_attempts=resources.settings.jobs_max_attempts,
            error=WORKER_LOST,
        )
        if outcome in ("requeued", "failed"):
            logger.warning("job_worker_lost", job_id=job_id, outcome=outcome)
        if outcome == "requeued":
            await queue.enqueue(job_id)
        elif outcome == "failed" and (job := await store.get(job_id)):
            await failed(queue.kinds[job.kind], job, resources, WORKER_LOST)


async def stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` for `stop`; whether it is set.

    The loops that run beside the jobs end by this, not by being cancelled: a cancellation
    that arrives during a Redis call can be lost in the client, and the loop then never ends.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
    return stop.is_set()


async def sweep_until(stop: asyncio.Event, resources: Resources, queue: JobQueue) -> None:
    """Sweep every third of a lease, until `stop` is set."""
    while not await stopped_within(stop, resources.settings.jobs_lease_seconds / 3):
        try:
            await sweep_lost_jobs(resources, queue)
        except RedisError as error:
            logger.warning("job_sweep_failed", error=str(error))


class JobService:
    """The caller's view: submit, read and cancel its own jobs (others' are not found)."""

    def __init__(self, resources: Resources, queue: JobQueue, principal: Principal) -> None:
        self.resources = resources
        self.store = resources.jobs
        self.queue = queue
        self.principal = principal

    async def submit(self, kind: str, input_: Mapping[str, Any]) -> Job:
        job_id = new_id()
        await self.store.create(
            job_id=job_id,
            kind=kind,
            principal=self.principal,
            input_=input_,
            lease_holder=self.queue.lease_holder,
            lease_seconds=self.resources.settings.jobs_lease_seconds,
        )
        # The job as accepted, read before any worker can know of it: one may finish it
        # before the answer is sent, and the answer says what was accepted, not what became.
        job = await self.get(job_id)
        try:
            await self.queue.enqueue(job_id)
        except QueueUnavailableError as error:
            # Never queued, never answered with its id: it must not linger as `queued`.
            await self.store.discard(job_id)
            msg = "Jobs cannot be queued right now; try again shortly"
            raise APIError(
                503, msg, code="queue_unavailable", headers={"Retry-After": "1"}
            ) from error
        JOBS_SUBMITTED.labels(kind=kind).inc()
        return job

    async def get(self, job_id: str) -> Job:
        job = await self.store.get(job_id) if is_id(job_id) else None
        if job is None or job.owner_id != self.principal.id:
            raise APIError(404, f"No job {job_id}", code="job_not_found")
        if job.status not in FINISHED and job.lease_until is not None:
            # Its worker may have died since the last sweep: find out now, not later.
            outcome = await self.store.expire(
                job_id,
                requeue=self.queue.requeues_lost_jobs,
                max_attempts=self.resources.settings.jobs_max_attempts,
                error=WORKER_LOST,
            )
            if outcome == "requeued":
                await self.queue.enqueue(job_id)
            if outcome == "failed":
                await failed(self.queue.kinds[job.kind], job, self.resources, WORKER_LOST)
            if outcome != "alive":
                job = await self.store.get(job_id) or job
        return job

    async def cancel(self, job_id: str) -> Job:
        job = await self.get(job_id)
        if job.status in ("succeeded", "failed"):
            msg = f"Job {job_id} has already {job.status}; there is nothing to cancel"
            raise APIError(409, msg, code="job_finished")
        if await self.store.cancel(job_id) in ("queued", "running"):
            self.queue.cancelled(job_id)
            await failed(self.queue.kinds[job.kind], job, self.resources, CANCELLED)
        return await self.get(job_id)
