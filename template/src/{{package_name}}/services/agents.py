"""Agent runs: a task planned into steps by the provider, each step carried out (calling a
tool when the plan says so), then a final answer written from the steps' outputs.

A run works in a task of its own and hands its events to whoever started it, so its time
limit and its cancellation end the run's work, never the caller's. Every provider call goes
through `MeteredCompletions`: each is charged, recorded and rate limited like any other. The
run is saved when it starts, after every step, and when it ends, that last save under a
shield, so a run that is cancelled is still kept as `cancelled`.

A run is cancelled from any replica: `RunCancellation.request` sets a key in Redis, which
the replica running the run reads every `agent_cancel_poll_seconds`, also in the middle of
a step (a slow tool, a long provider call).

A run whose process is lost (a crash, a kill that left it no time to save) would stay
`running` for good: the first read of it after its time limit and `LOST_RUN_GRACE` ends it
`failed` with `run_lost`, so nobody waits on it and it can be started again.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import anyio
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import APIError
from ..llm.base import ChatMessage, ChatRequest, Usage
from ..llm.errors import ProviderError
from ..llm.fake import PLANNING_PROMPT_OPENING
from ..storage.agent_runs import AgentRun, AgentStep, ToolCall
from ..storage.clock import now
from ..storage.ids import is_id, new_id
from .conversations import checked_cursor

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from redis.asyncio import Redis

    from ..resources import Resources
    from ..storage.agent_runs import AgentRunRepository, AgentRunStatus
    from .agent_tools import ToolRegistry
    from .metering import MeteredCompletions

logger = structlog.get_logger(__name__)

ToolErrorPolicy = Literal["continue", "stop"]

# A run's own replica ends it within its time limit, and saves that end within moments; one
# still `running` this long after its time limit has no process left to end it.
LOST_RUN_GRACE = timedelta(seconds=60)

# Runs being saved as they end, each in a task that must outlive a cancelled caller.
_ENDING: set[asyncio.Future[AgentRun]] = set()


@dataclass(frozen=True, slots=True)
class AgentEvent:
    """One event of a run, as it is streamed: `status`, `tool_call`, `tool_result`,
    `step_result`, `final` or `error`."""

    type: str
    data: dict[str, Any]


class PlannedStep(BaseModel):
    model_config = ConfigDict(extra="ignore")

    description: str = Field(min_length=1, max_length=2000)
    tool: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)


class Plan(BaseModel):
    model_config = ConfigDict(extra="ignore")

    steps: list[PlannedStep] = Field(min_length=1)


class RunFailedError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RunCancellation:
    """Cancel requests for runs, through Redis, so they reach the replica running the run."""

    def __init__(
        self, redis: Redis, *, namespace: str, ttl_seconds: int, poll_seconds: float
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        self.ttl_seconds = ttl_seconds
        self.poll_seconds = poll_seconds

    def _key(self, run_id: str) -> str:
        return f"{self.namespace}:cancel:{run_id}"

    async def request(self, run_id: str) -> None:
        await self.redis.set(self._key(run_id), "1", ex=self.ttl_seconds)

    async def wait(self, run_id: str) -> None:
        """Return once the run is asked to stop: its key is read every `poll_seconds`, one
        cheap read, rather than a subscription connection held for every run."""
        task = asyncio.current_task()
        while not await self.redis.exists(self._key(run_id)):
            # redis-py can swallow a cancellation that arrives during a command; it must not
            # keep this loop going after the run it watches has ended.
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            await asyncio.sleep(self.poll_seconds)


@dataclass
class _Progress:
    steps: list[AgentStep] = field(default_factory=list)
    usage: Usage = field(default_factory=lambda: Usage(0, 0))
    final: str | None = None

    def add(self, usage: Usage) -> None:
        self.usage = Usage(
            self.usage.input_tokens + usage.input_tokens,
            self.usage.output_tokens + usage.output_tokens,
        )


class AgentRunner:
    def __init__(
        self,
        repository: AgentRunRepository,
        completions: MeteredCompletions,
        tools: ToolRegistry,
        cancellation: RunCancellation,
        *,
        max_steps: int,
        timeout: float,
        tool_error_policy: ToolErrorPolicy,
        max_tokens: int,
    ) -> None:
        self.repository = repository
        self.completions = completions
        self.tools = tools
        self.cancellation = cancellation
        self.owner_id = completions.principal.id
        self.max_steps = max_steps
        self.timeout = timeout
        self.tool_error_policy = tool_error_policy
        self.max_tokens = max_tokens

    @classmethod
    def for_resources(cls, resources: Resources, completions: MeteredCompletions) -> AgentRunner:
        """The runner of the caller whose calls `completions` charges."""
        settings = resources.settings
        return cls(
            resources.database.agent_runs,
            completions,
            resources.tools,
            RunCancellation(
                resources.redis,
                namespace=f"{settings.redis_namespace}:agent",
                # Long enough to outlive any run it could be meant for.
                ttl_seconds=int(settings.agent_run_timeout) + 60,
                poll_seconds=settings.agent_cancel_poll_seconds,
            ),
            max_steps=settings.agent_max_steps,
            timeout=settings.agent_run_timeout,
            tool_error_policy=settings.agent_tool_error_policy,
            max_tokens=settings.llm_default_max_tokens,
        )

    async def create(self, task: str, model: str) -> AgentRun:
        created = now()
        run = AgentRun(
            id=new_id(),
            owner_id=self.owner_id,
            model=model,
            task=task,
            status="running",
            created_at=created,
            updated_at=created,
        )
        await self.repository.create(run)
        return run

    async def get(self, run_id: str) -> AgentRun:
        run = await self.repository.get(run_id, owner_id=self.owner_id) if is_id(run_id) else None
        if run is None:
            # The same answer whether it does not exist or is someone else's.
            raise APIError(404, "No such agent run", code="not_found")
        return await self._settled(run)

    async def page(self, *, before: str | None, limit: int) -> list[AgentRun]:
        runs = await self.repository.list_for_owner(
            owner_id=self.owner_id, before=checked_cursor(before, "before"), limit=limit
        )
        return [await self._settled(run) for run in runs]

    async def _settled(self, run: AgentRun) -> AgentRun:
        """The run as read, or, when it has outlived its time limit, ended as lost."""
        if run.status != "running" or now() < run.created_at + self._lost_after:
            return run
        lost = replace(run, status="failed", error="run_lost", updated_at=now())
        if await self.repository.end_if_running(lost):
            logger.warning("agent_run_lost", run_id=run.id, started_at=run.created_at.isoformat())
            return lost
        # Its replica saved its end in the meantime after all.
        return await self.repository.get(run.id, owner_id=self.owner_id) or lost

    @property
    def _lost_after(self) -> timedelta:
        return timedelta(seconds=self.timeout) + LOST_RUN_GRACE

    async def cancel(self, run_id: str) -> AgentRun:
        """Ask the replica running the run to stop it (409 when it has ended)."""
        run = await self.get(run_id)
        if run.status != "running":
            msg = f"The run has ended ({run.status}); only a running run can be cancelled"
            raise APIError(409, msg, code="run_not_running")
        await self.cancellation.request(run.id)
        return run

    async def stream(self, run: AgentRun) -> AsyncIterator[AgentEvent]:
        """The run's events as it makes them, for a stream to its caller.

        The run works in its own task, so its time limit and cancellation never cut the
        stream's writes; closing the stream (the client gone) cancels the run.
        """
        queue: asyncio.Queue[AgentEvent | None] = asyncio.Queue()

        async def emit(event: AgentEvent) -> None:
            queue.put_nowait(event)

        async def execute() -> None:
            try:
                await self.execute(run, emit)
            finally:
                queue.put_nowait(None)

        work = asyncio.ensure_future(execute())
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            work.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(work, return_exceptions=True)

    async def execute(
        self, run: AgentRun, emit: Callable[[AgentEvent], Awaitable[None]]
    ) -> AgentRun:
        """Carry the run out to its end, emitting its events; the run as it was saved last.

        Cancelling the task that awaits this cancels the run (saved `cancelled`, code
        `client_disconnected`) and raises the cancellation on.
        """
        progress = _Progress()
        work = asyncio.ensure_future(self._work(run, progress, emit))
        stop = asyncio.ensure_future(self.cancellation.wait(run.id))
        status: AgentRunStatus = "completed"
        failure: RunFailedError | None = None
        try:
            done, _ = await asyncio.wait(
                {work, stop}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if work in done:
                error = work.exception()
                if isinstance(error, RunFailedError):
                    status, failure = "failed", error
                elif error is not None:
                    # Most likely the database, which saves the steps: the run cannot go on.
                    logger.error("agent_run_failed", run_id=run.id, exc_info=error)
                    status = "failed"
                    failure = RunFailedError("run_failed", "The run failed; start it again")
            elif stop in done and stop.exception() is None:
                status = "cancelled"
                failure = RunFailedError("cancelled", "The run was cancelled")
            elif stop in done:
                # Redis failed under the listener: the run cannot be cancelled, so it stops.
                status = "failed"
                failure = RunFailedError("run_not_cancellable", "The run lost its Redis connection")
                logger.warning(
                    "agent_cancel_listener_failed", run_id=run.id, exc_info=stop.exception()
                )
            else:
                status = "failed"
                failure = RunFailedError(
                    "run_timeout", f"The run did not finish within {self.timeout:g} seconds"
                )
        except asyncio.CancelledError:
            status = "cancelled"
            failure = RunFailedError("client_disconnected", "The caller went away")
            raise
        finally:
            for task in (work, stop):
                task.cancel()
            # In a task of its own: a cancellation of this one (the caller gone just as the
            # run ended) must not cut the save that ends the run, or it stays `running`.
            ending = asyncio.ensure_future(
                self._end(run, progress, status, failure, [work, stop], emit)
            )
            _ENDING.add(ending)  # the loop holds tasks weakly
            ending.add_done_callback(_ENDING.discard)
            with anyio.CancelScope(shield=True):
                ended = await asyncio.shield(ending)
        return ended

    async def _end(
        self,
        run: AgentRun,
        progress: _Progress,
        status: AgentRunStatus,
        failure: RunFailedError | None,
        stopped: list[asyncio.Future[None]],
        emit: Callable[[AgentEvent], Awaitable[None]],
    ) -> AgentRun:
        await asyncio.gather(*stopped, return_exceptions=True)
        ended = self._record(run, progress, status, failure)
        await self.repository.save(ended)
        if failure is not None:
            await emit(AgentEvent("error", {"code": failure.code, "message": failure.message}))
        return ended

    def _record(
        self,
        run: AgentRun,
        progress: _Progress,
        status: AgentRunStatus,
        failure: RunFailedError | None = None,
    ) -> AgentRun:
        return replace(
            run,
            status=status,
            updated_at=now(),
            steps=tuple(progress.steps),
            final=progress.final,
            error=failure.code if failure else None,
            input_tokens=progress.usage.input_tokens,
            output_tokens=progress.usage.output_tokens,
        )

    async def _work(
        self, run: AgentRun, progress: _Progress, emit: Callable[[AgentEvent], Awaitable[None]]
    ) -> None:
        await emit(AgentEvent("status", {"run_id": run.id, "phase": "planning"}))
        plan = await self._plan(run, progress)
        planned = len(plan.steps)
        for index, planned_step in enumerate(plan.steps[: self.max_steps], start=1):
            await emit(AgentEvent("status", {"phase": "step", "step": index, "of": planned}))
            step = await self._step(run, index, planned_step, progress, emit)
            progress.steps.append(step)
            await self.repository.save(self._record(run, progress, "running"))
            if step.tool_call and step.tool_call.error and self.tool_error_policy == "stop":
                msg = f"Step {index}: the tool {step.tool_call.tool!r} failed"
                raise RunFailedError("tool_failed", msg)
        if planned > self.max_steps:
            msg = f"The plan has {planned} steps; a run takes at most {self.max_steps}"
            raise RunFailedError("step_limit_exceeded", msg)
        await emit(AgentEvent("status", {"phase": "synthesising"}))
        outputs = "\n".join(f"Step {s.index} ({s.description}): {s.output}" for s in progress.steps)
        answer, usage = await self._ask(
            run,
            "Write the final answer to the task from the outputs of its steps.",
            f"Task:\n{run.task}\n\nOutputs of the steps:\n{outputs}",
        )
        progress.add(usage)
        progress.final = answer
        await emit(
            AgentEvent(
                "final",
                {
                    "run_id": run.id,
                    "content": answer,
                    "usage": _usage_out(progress.usage),
                },
            )
        )

    async def _plan(self, run: AgentRun, progress: _Progress) -> Plan:
        tools = [
            {"name": tool.name, "description": tool.description, "arguments": tool.schema()}
            for tool in self.tools.tools()
        ]
        prompt = (
            f"{PLANNING_PROMPT_OPENING} Answer with JSON only, of the form "
            '{"steps": [{"description": "...", "tool": "<a tool name or null>", '
            '"arguments": {...}}]}, in the order they are to be done. '
            f"The tools, with the JSON schema of their arguments: {json.dumps(tools)}"
        )
        answer, usage = await self._ask(run, prompt, run.task)
        progress.add(usage)
        try:
            return Plan.model_validate_json(_json_of(answer))
        except ValidationError as error:
            msg = f"The provider's plan is not a plan of steps: {_first_problem(error)}"
            raise RunFailedError("invalid_plan", msg) from error

    async def _step(
        self,
        run: AgentRun,
        index: int,
        planned: PlannedStep,
        progress: _Progress,
        emit: Callable[[AgentEvent], Awaitable[None]],
    ) -> AgentStep:
        call: ToolCall | None = None
        if planned.tool is not None:
            await emit(
                AgentEvent(
                    "tool_call",
                    {"step": index, "tool": planned.tool, "arguments": planned.arguments},
                )
            )
            call = await self._call_tool(planned.tool, planned.arguments)
            outcome = {"error": call.error} if call.error is not None else {"result": call.result}
            await emit(AgentEvent("tool_result", {"step": index, "tool": call.tool, **outcome}))
        context = f"Task:\n{run.task}\n\nThis step: {planned.description}"
        if call is not None:
            context += f"\n\nThe tool {call.tool} answered: {json.dumps(_tool_outcome(call))}"
        output, usage = await self._ask(run, "Carry out this one step of the task.", context)
        progress.add(usage)
        await emit(AgentEvent("step_result", {"step": index, "output": output}))
        return AgentStep(
            index=index,
            description=planned.description,
            output=output,
            tool_call=call,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
        )

    async def _call_tool(self, name: str, arguments: dict[str, Any]) -> ToolCall:
        tool = self.tools.get(name)
        if tool is None:
            known = ", ".join(self.tools.names()) or "none"
            return ToolCall(name, arguments, error=f"No tool named {name!r} (tools: {known})")
        try:
            result = await tool.call(arguments)
            # Kept and streamed as JSON: a result that is not is the tool's failure.
            json.dumps(result)
        except ValidationError as error:
            return ToolCall(name, arguments, error=f"Invalid arguments: {_first_problem(error)}")
        except Exception as error:  # noqa: BLE001 (a tool's failure is the step's result)
            logger.info("agent_tool_failed", tool=name, error=repr(error))
            return ToolCall(name, arguments, error=f"{type(error).__name__}: {error}")
        return ToolCall(name, arguments, result=result)

    async def _ask(self, run: AgentRun, system: str, content: str) -> tuple[str, Usage]:
        request = ChatRequest(
            model=run.model,
            messages=[ChatMessage("system", system), ChatMessage("user", content)],
            max_tokens=self.max_tokens,
        )
        try:
            completion, _ = await self.completions.complete(request)
        except ProviderError as error:
            raise RunFailedError(error.code, error.message) from error
        except APIError as error:
            raise RunFailedError(error.code or "request_refused", error.message) from error
        return completion.content, completion.usage


def _json_of(answer: str) -> str:
    """The answer without the Markdown code fence some models put around JSON."""
    text = answer.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[-1].rsplit("```", 1)[0]
    return text


def _first_problem(error: ValidationError) -> str:
    problem = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in problem["loc"]) or "the value"
    return f"{where}: {problem['msg']}"


def _tool_outcome(call: ToolCall) -> dict[str, Any]:
    return {"error": call.error} if call.error is not None else {"result": call.result}


def _usage_out(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }
