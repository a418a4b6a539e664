from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .conversations import TurnUsage
from .text import KeptRequest

# A task is a prompt: long enough for a detailed one, short of a document.
MAX_TASK_CHARACTERS = 20_000


class AgentRunCreate(KeptRequest):
    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=MAX_TASK_CHARACTERS)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    stream: bool = False


class ToolCallOut(BaseModel):
    tool: str
    arguments: dict[str, Any]
    # Exactly one of the two is set.
    result: Any = None
    error: str | None = None


class AgentStepOut(BaseModel):
    index: int
    description: str
    output: str
    tool_call: ToolCallOut | None
    usage: TurnUsage


class AgentRunOut(BaseModel):
    id: str
    object: Literal["agent.run"] = "agent.run"
    model: str
    task: str
    status: Literal["running", "completed", "failed", "cancelled"]
    steps: list[AgentStepOut]
    final: str | None
    # Why it failed or was cancelled: the `code` of its `error` event.
    error: str | None
    usage: TurnUsage
    created_at: datetime
    updated_at: datetime


class AgentRunPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[AgentRunOut]
    # Pass as `before` for the next (older) page; null on the last page.
    next_cursor: str | None
