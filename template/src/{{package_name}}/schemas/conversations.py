from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .text import KeptRequest

# Kept with the conversation, as a 32-bit integer where the database has a column for it; no
# model answers with anywhere near this many tokens, and a turn past its model's is a 400.
MAX_TOKENS_CEILING = 1_000_000


class ConversationCreate(KeptRequest):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(default="New conversation", min_length=1, max_length=200)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    system_prompt: str | None = Field(default=None, max_length=100_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_CEILING)


class ConversationPatch(KeptRequest):
    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, min_length=1, max_length=200)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    system_prompt: str | None = Field(default=None, max_length=100_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_CEILING)


class ConversationOut(BaseModel):
    id: str
    object: Literal["conversation"] = "conversation"
    title: str
    model: str
    system_prompt: str | None
    temperature: float | None
    max_tokens: int | None
    created_at: datetime
    updated_at: datetime


class ConversationPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[ConversationOut]
    # Pass as `before` for the next (older) page; null on the last page.
    next_cursor: str | None


class MessageCreate(KeptRequest):
    model_config = ConfigDict(extra="forbid")

    content: str = Field(min_length=1, max_length=100_000)
    stream: bool = False


class MessageOut(BaseModel):
    id: str
    object: Literal["message"] = "message"
    role: Literal["system", "user", "assistant"]
    content: str
    status: Literal["complete", "interrupted", "error"]
    input_tokens: int
    output_tokens: int
    latency_ms: float | None
    created_at: datetime


class MessagePage(BaseModel):
    object: Literal["list"] = "list"
    data: list[MessageOut]
    # Pass as `after` for the next (newer) page; null on the last page.
    next_cursor: str | None


class TurnUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TurnResult(BaseModel):
    """A finished turn: both messages it saved, and what it cost."""

    user_message: MessageOut
    assistant_message: MessageOut
    usage: TurnUsage
