"""Conversations and their messages, always read and written on behalf of their owner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from datetime import datetime

MessageRole = Literal["system", "user", "assistant"]
# `interrupted`: the caller went away mid-answer; `error`: the provider failed mid-answer.
MessageStatus = Literal["complete", "interrupted", "error"]


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    owner_id: str
    title: str
    model: str
    system_prompt: str | None
    temperature: float | None
    max_tokens: int | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ConversationChanges:
    """What a PATCH may change; None leaves a field as it is."""

    title: str | None = None
    model: str | None = None
    system_prompt: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    conversation_id: str
    role: MessageRole
    content: str
    status: MessageStatus
    created_at: datetime
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: float | None = None


class ConversationRepository(Protocol):
    async def create(self, conversation: Conversation) -> None: ...

    async def get(self, conversation_id: str, *, owner_id: str) -> Conversation | None:
        """None when it does not exist or belongs to someone else: the caller cannot tell."""
        ...

    async def list_for_owner(
        self, *, owner_id: str, before: str | None, limit: int
    ) -> list[Conversation]:
        """Newest first; `before` is the id of the last conversation of the previous page.

        Ids are UUIDv7, so their order is their creation order.
        """
        ...

    async def update(
        self, conversation_id: str, *, owner_id: str, changes: ConversationChanges
    ) -> Conversation | None: ...

    async def delete(self, conversation_id: str, *, owner_id: str) -> bool:
        """Deletes the conversation and its messages; False when there was none to delete."""
        ...

    async def add_turn(self, question: Message, answer: Message) -> None:
        """Both messages of a turn in one write: neither is kept without the other."""
        ...

    async def messages(
        self, conversation_id: str, *, after: str | None, limit: int
    ) -> list[Message]:
        """Oldest first; `after` is the id of the last message of the previous page."""
        ...

    async def recent_messages(self, conversation_id: str, *, limit: int) -> list[Message]:
        """The newest `limit` messages, oldest first: a turn's context."""
        ...
