from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from ...errors import error_responses
from ...schemas.agent_runs import (
    AgentRunCreate,
    AgentRunOut,
    AgentRunPage,
    AgentStepOut,
    ToolCallOut,
)
from ...schemas.conversations import TurnUsage
from ...services.agents import AgentRunner
from ..agent_stream import STREAMED_RUN_RESPONSES, streamed_run
from ..deps import ResourcesDep
from ..disconnect import cancel_on_disconnect
from ..limits import LIMITED_ROUTE_ERRORS, MeteredCompletionsDep

if TYPE_CHECKING:
    from ...services.agents import AgentEvent
    from ...storage.agent_runs import AgentRun

router = APIRouter(prefix="/agent/runs", tags=["agents"], responses=LIMITED_ROUTE_ERRORS)


async def get_agent_runner(
    completions: MeteredCompletionsDep, resources: ResourcesDep
) -> AgentRunner:
    return AgentRunner.for_resources(resources, completions)


AgentRunnerDep = Annotated[AgentRunner, Depends(get_agent_runner)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=AgentRunOut,
    responses={**STREAMED_RUN_RESPONSES, **error_responses(400)},
)
async def create_agent_run(
    body: AgentRunCreate, request: Request, runner: AgentRunnerDep, resources: ResourcesDep
) -> AgentRunOut | Response:
    """Plan the task, carry out its steps, answer it; `stream: true` streams the run's events
    as Server-Sent Events where the service offers them (see `api/agent_stream.py`)."""
    model = body.model or resources.settings.default_chat_model
    if body.stream:
        return await streamed_run(request, runner, body.task, model, resources.settings)
    run = await runner.create(body.task, model)

    async def ignore(event: AgentEvent) -> None:
        del event

    return agent_run_out(await cancel_on_disconnect(request, runner.execute(run, ignore)))


@router.get("")
async def list_agent_runs(
    runner: AgentRunnerDep,
    before: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> AgentRunPage:
    """The caller's runs, newest first."""
    runs = await runner.page(before=before, limit=limit)
    return AgentRunPage(
        data=[agent_run_out(run) for run in runs],
        next_cursor=runs[-1].id if len(runs) == limit else None,
    )


@router.get("/{run_id}", responses=error_responses(404))
async def read_agent_run(run_id: str, runner: AgentRunnerDep) -> AgentRunOut:
    return agent_run_out(await runner.get(run_id))


@router.post(
    "/{run_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(404, 409),
)
async def cancel_agent_run(run_id: str, runner: AgentRunnerDep) -> AgentRunOut:
    """Ask the run to stop, wherever it runs; it ends `cancelled` within moments."""
    return agent_run_out(await runner.cancel(run_id))


def agent_run_out(run: AgentRun) -> AgentRunOut:
    return AgentRunOut(
        id=run.id,
        model=run.model,
        task=run.task,
        status=run.status,
        steps=[
            AgentStepOut(
                index=step.index,
                description=step.description,
                output=step.output,
                tool_call=ToolCallOut(
                    tool=step.tool_call.tool,
                    arguments=step.tool_call.arguments,
                    result=step.tool_call.result,
                    error=step.tool_call.error,
                )
                if step.tool_call
                else None,
                usage=_usage(step.input_tokens, step.output_tokens),
            )
            for step in run.steps
        ],
        final=run.final,
        error=run.error,
        usage=_usage(run.input_tokens, run.output_tokens),
        created_at=run.created_at,
        updated_at=run.updated_at,
    )


def _usage(input_tokens: int, output_tokens: int) -> TurnUsage:
    return TurnUsage(
        prompt_tokens=input_tokens,
        completion_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
    )
