"""The built-in fake provider: deterministic answers, configurable timing and failures.

It answers when no provider is configured, so a freshly generated service works out of the
box, and it is what the tests use in place of an LLM. The answer is derived from the request
alone (same messages, same answer), each word is exactly one token of `llm.tokens`, and every
failure a real upstream shows can be injected from settings: a 429 with `Retry-After`, a 5xx
before the first token or in the middle of a stream, or a call that hangs until a timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import anyio

from .base import (
    ChatRequest,
    Completion,
    EmbeddingRequest,
    Embeddings,
    ModelInfo,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Usage,
)
from .errors import ProviderRateLimitedError, ProviderUnavailableError
from .tokens import count_message_tokens, count_text_tokens

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from .embedder import HashingEmbedder

# The opening of an agent run's planning prompt (`services/agents.py`): asked to plan, the fake
# answers with a plan scripted by the task, so a test decides a run's steps exactly.
PLANNING_PROMPT_OPENING = "You plan the steps of a task."

FakeFailure = Literal["none", "rate_limit", "server_error", "error_mid_stream", "hang"]

# Up to this many inputs are embedded on the event loop; more go to a worker thread.
_INLINE_EMBEDDINGS = 8

# Words of at most four letters: each is one token of the estimate in `llm.tokens`.
_VOCABULARY = (
    "the",
    "a",
    "an",
    "of",
    "to",
    "in",
    "on",
    "at",
    "for",
    "with",
    "and",
    "or",
    "but",
    "so",
    "as",
    "by",
    "from",
    "that",
    "this",
    "it",
    "is",
    "was",
    "be",
    "can",
    "will",
    "may",
    "must",
    "not",
    "no",
    "yes",
    "all",
    "any",
    "some",
    "each",
    "more",
    "most",
    "less",
    "few",
    "many",
    "much",
    "very",
    "good",
    "fast",
    "slow",
    "new",
    "old",
    "big",
    "ok",
    "data",
    "file",
    "job",
    "task",
    "step",
    "plan",
    "user",
    "team",
    "code",
    "test",
    "run",
    "call",
    "API",
    "key",
    "node",
    "edge",
    "path",
    "rule",
    "goal",
    "idea",
    "note",
    "fact",
    "case",
    "view",
    "list",
    "map",
    "set",
    "log",
)


@dataclass(frozen=True, slots=True)
class FakeBehaviour:
    first_token_delay: float = 0.0
    token_delay: float = 0.0
    failure: FakeFailure = "none"
    failure_count: int = 0  # fail only the first N calls; 0 fails every call
    retry_after: float = 1.0
    answer_tokens: int = 0  # 0: between 8 and 32 tokens, chosen by the request


class FakeProvider:
    name = "fake"

    def __init__(
        self,
        *,
        chat_model: str,
        embedding_model: str,
        embedder: HashingEmbedder,
        behaviour: FakeBehaviour | None = None,
    ) -> None:
        self.chat_model = chat_model
        self.embedding_model = embedding_model
        self.embedder = embedder
        self.behaviour = behaviour or FakeBehaviour()
        self.calls = 0
        # Every token handed out, so tests can see that generation stops on disconnect.
        self.tokens_generated = 0

    @property
    def models(self) -> frozenset[str]:
        return frozenset({self.chat_model, self.embedding_model})

    async def list_models(self) -> list[ModelInfo]:
        return [
            ModelInfo(id=self.chat_model, owned_by="fake"),
            ModelInfo(id=self.embedding_model, owned_by="local"),
        ]

    def answer_for(self, request: ChatRequest) -> tuple[list[str], Completion]:
        """The tokens the fake answers this request with, and the completion they make."""
        if request.messages and request.messages[0].content.startswith(PLANNING_PROMPT_OPENING):
            plan = scripted_plan(request.messages[-1].content)
            usage = Usage(count_message_tokens(request.messages), count_text_tokens(plan))
            return [plan], Completion(content=plan, finish_reason="stop", usage=usage)
        seed = hashlib.sha256(
            "\x1e".join(f"{m.role}:{m.content}" for m in request.messages).encode()
        ).digest()
        rng = random.Random(seed)  # noqa: S311 (deterministic text, not secrecy)
        length = self.behaviour.answer_tokens or rng.randint(8, 32)
        words = [rng.choice(_VOCABULARY) for _ in range(max(1, length - 1))]
        tokens = [words[0].capitalize(), *(f" {word}" for word in words[1:]), "."]
        finish_reason: Literal["stop", "length"] = "stop"
        if len(tokens) > request.max_tokens:
            tokens, finish_reason = tokens[: request.max_tokens], "length"
        text = "".join(tokens)
        for stop in request.stop:
            if stop and stop in text:
                text, finish_reason = text[: text.index(stop)], "stop"
                tokens = _retokenize(tokens, len(text))
        usage = Usage(
            input_tokens=count_message_tokens(request.messages),
            output_tokens=count_text_tokens(text),
        )
        return tokens, Completion(content=text, finish_reason=finish_reason, usage=usage)

    async def complete(self, request: ChatRequest) -> Completion:
        failing = self._start_call()
        await self._before_first_token(failing)
        tokens, completion = self.answer_for(request)
        for _ in tokens:
            self.tokens_generated += 1
            if self.behaviour.token_delay:
                await asyncio.sleep(self.behaviour.token_delay)
        if failing and self.behaviour.failure == "error_mid_stream":
            raise ProviderUnavailableError("fake provider failed mid-answer")
        return completion

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        failing = self._start_call()
        await self._before_first_token(failing)
        tokens, completion = self.answer_for(request)
        for index, token in enumerate(tokens):
            if index and self.behaviour.token_delay:
                await asyncio.sleep(self.behaviour.token_delay)
            if (
                failing
                and self.behaviour.failure == "error_mid_stream"
                and index == len(tokens) // 2
            ):
                raise ProviderUnavailableError("fake provider failed mid-stream")
            self.tokens_generated += 1
            yield TextDelta(token)
        yield StreamEnd(finish_reason=completion.finish_reason, usage=completion.usage)

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        def embed_all() -> list[list[float]]:
            return [self.embedder.embed(text, request.dimensions) for text in request.inputs]

        # Hashing a batch of chunks is tens of milliseconds of CPU: not on the event loop.
        many = len(request.inputs) > _INLINE_EMBEDDINGS
        vectors = await anyio.to_thread.run_sync(embed_all) if many else embed_all()
        return Embeddings(vectors, sum(count_text_tokens(text) for text in request.inputs))

    def _start_call(self) -> bool:
        self.calls += 1
        behaviour = self.behaviour
        return behaviour.failure != "none" and (
            behaviour.failure_count == 0 or self.calls <= behaviour.failure_count
        )

    async def _before_first_token(self, failing: bool) -> None:
        if failing and self.behaviour.failure == "rate_limit":
            raise ProviderRateLimitedError(
                "fake provider is rate limited", retry_after=self.behaviour.retry_after
            )
        if failing and self.behaviour.failure == "server_error":
            raise ProviderUnavailableError("fake provider answered 503")
        if failing and self.behaviour.failure == "hang":
            await asyncio.Event().wait()
        if self.behaviour.first_token_delay:
            await asyncio.sleep(self.behaviour.first_token_delay)


_TOOL_LINE = re.compile(r"use (\S+)(?:\s+(.*))?")


def scripted_plan(task: str) -> str:
    """The plan for `task`: each line `use <tool> <JSON arguments>` a step calling that tool
    (with the text as it is when it is not JSON, which the planner's caller refuses), and
    every other line that is not blank a step of its own."""
    steps: list[dict[str, object]] = []
    for line in task.splitlines():
        line = line.strip()
        if not line:
            continue
        match = _TOOL_LINE.fullmatch(line)
        if match is None:
            steps.append({"description": line, "tool": None, "arguments": {}})
            continue
        text = match.group(2) or "{}"
        try:
            arguments: object = json.loads(text)
        except ValueError:
            arguments = text
        steps.append({"description": line, "tool": match.group(1), "arguments": arguments})
    return json.dumps({"steps": steps})


def _retokenize(tokens: list[str], length: int) -> list[str]:
    """The tokens that make up the first `length` characters of their concatenation."""
    kept: list[str] = []
    for token in tokens:
        room = length - sum(map(len, kept))
        if room <= 0:
            break
        kept.append(token[:room])
    return kept
