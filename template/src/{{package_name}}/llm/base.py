"""What every provider speaks: the `Provider` protocol and the values it passes around.

These are the service's own types, not any SDK's: the API layer translates the OpenAI wire
format into them, and each provider translates them into its upstream's format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

Role = Literal["system", "developer", "user", "assistant"]
FinishReason = Literal["stop", "length", "content_filter"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    messages: list[ChatMessage]
    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int
    output_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class Completion:
    content: str
    finish_reason: FinishReason
    usage: Usage


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer, as soon as the provider yields it."""

    text: str


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The last event of every stream that finishes normally."""

    finish_reason: FinishReason
    usage: Usage


StreamEvent = TextDelta | StreamEnd


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    model: str
    inputs: list[str]
    dimensions: int | None = None


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: list[list[float]]
    input_tokens: int


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str
    owned_by: str
    created: int = 0


class Provider(Protocol):
    """An LLM backend. Raises `llm.errors.ProviderError` subclasses, never SDK exceptions."""

    name: str

    async def list_models(self) -> list[ModelInfo]: ...

    async def complete(self, request: ChatRequest) -> Completion: ...

    def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        """Text deltas as they come, then exactly one `StreamEnd`.

        Closing the generator early (`aclose()`, or cancelling the task that iterates it)
        must stop the upstream call, so no tokens are generated for nobody.
        """
        ...

    async def embed(self, request: EmbeddingRequest) -> Embeddings: ...
