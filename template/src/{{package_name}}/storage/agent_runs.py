"""Agent runs: a task planned into steps, each step's tool call and output, and the final
answer, kept for the caller who started it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from datetime import datetime

# `running` until the run ends one of the three other ways; a run is written whole each time
# it changes (after each step), so a reader never sees half a step. A run whose process was
# lost is ended `failed` by the first reader after its time limit (`services/agents.py`).
AgentRunStatus = Literal["running", "completed", "failed", "cancelled"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    tool: str
    arguments: dict[str, Any]
    # Exactly one of the two is set once the call has returned.
    result: Any = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class AgentStep:
    index: int  # 1-based, in plan order
    description: str
    output: str
    tool_call: ToolCall | None = None
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class AgentRun:
    id: str
    owner_id: str
    model: str
    task: str
    status: AgentRunStatus
    created_at: datetime
    updated_at: datetime
    steps: tuple[AgentStep, ...] = field(default=())
    final: str | None = None
    # Why the run failed or was cancelled, in the words of the error envelope's `code`.
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0


def steps_to_json(steps: tuple[AgentStep, ...]) -> list[dict[str, Any]]:
    """The steps as JSON objects (a tool call nested in its step), as both backends store them."""
    return [asdict(step) for step in steps]


def steps_from_json(documents: list[dict[str, Any]]) -> tuple[AgentStep, ...]:
    return tuple(
        AgentStep(
            index=document["index"],
            description=document["description"],
            output=document["output"],
            tool_call=_tool_call_from_json(document.get("tool_call")),
            input_tokens=document["input_tokens"],
            output_tokens=document["output_tokens"],
        )
        for document in documents
    )


def _tool_call_from_json(document: dict[str, Any] | None) -> ToolCall | None:
    if document is None:
        return None
    return ToolCall(
        tool=document["tool"],
        arguments=document["arguments"],
        result=document.get("result"),
        error=document.get("error"),
    )


class AgentRunRepository(Protocol):
    async def create(self, run: AgentRun) -> None: ...

    async def save(self, run: AgentRun) -> None:
        """Replaces the stored run with the same id and owner by `run` (status, steps, final
        answer, error, usage, updated_at)."""
        ...

    async def end_if_running(self, run: AgentRun) -> bool:
        """Saves `run`, an ended run, only over a stored run that is still `running`, so an end
        saved meanwhile by the run's own replica is never written over; whether it saved."""
        ...

    async def get(self, run_id: str, *, owner_id: str) -> AgentRun | None:
        """None when it does not exist or belongs to someone else: the caller cannot tell."""
        ...

    async def list_for_owner(
        self, *, owner_id: str, before: str | None, limit: int
    ) -> list[AgentRun]:
        """Newest first; `before` is the id of the last run of the previous page (ids are
        UUIDv7, so their order is their creation order)."""
        ...
