"""Chat completions and embeddings: provider choice, timeouts, retries, batching."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, TypeVar

from ..errors import APIError
from ..llm.base import ChatRequest, EmbeddingRequest, Embeddings
from ..llm.errors import ProviderTimeoutError
from ..llm.retry import RetryPolicy, call_with_retries, stream_with_retries

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable

    from ..llm.base import Completion, ModelInfo, Provider, StreamEvent
    from ..llm.router import ProviderRouter
    from ..settings import Settings

T = TypeVar("T")
E = TypeVar("E")

# Embedding batches sent to the provider at once, per request.
_EMBEDDING_CONCURRENCY = 4


class CompletionService:
    def __init__(
        self,
        router: ProviderRouter,
        *,
        retry: RetryPolicy,
        request_timeout: float,
        total_timeout: float,
        max_output_tokens: int,
        embedding_batch_size: int,
    ) -> None:
        self.router = router
        self.retry = retry
        self.request_timeout = request_timeout
        self.total_timeout = total_timeout
        self.max_output_tokens = max_output_tokens
        self.embedding_batch_size = embedding_batch_size

    @classmethod
    def from_settings(cls, router: ProviderRouter, settings: Settings) -> CompletionService:
        return cls(
            router,
            retry=RetryPolicy(
                max_attempts=settings.llm_max_attempts,
                base_delay=settings.llm_retry_base_delay,
                max_delay=settings.llm_retry_max_delay,
            ),
            request_timeout=settings.llm_request_timeout,
            total_timeout=settings.llm_total_timeout,
            max_output_tokens=settings.llm_max_output_tokens,
            embedding_batch_size=settings.embedding_batch_size,
        )

    async def list_models(self) -> list[ModelInfo]:
        return await _within(self.total_timeout, self.router.list_models())

    async def complete(self, request: ChatRequest) -> Completion:
        provider = self._provider_for(request)

        async def attempt() -> Completion:
            return await _within(self.request_timeout, provider.complete(request))

        return await _within(self.total_timeout, call_with_retries(attempt, self.retry))

    def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        """The provider's events; raises `ProviderError` before or between them."""
        provider = self._provider_for(request)
        deadline = asyncio.get_running_loop().time() + self.total_timeout
        # The guard sits inside the retry loop, so a provider that never starts is retried.
        return stream_with_retries(
            lambda: _guarded(provider.stream(request), gap=self.request_timeout, deadline=deadline),
            self.retry,
        )

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        provider = self.router.for_model(request.model)
        size = self.embedding_batch_size
        batches = [request.inputs[i : i + size] for i in range(0, len(request.inputs), size)]
        gate = asyncio.Semaphore(_EMBEDDING_CONCURRENCY)

        async def embed_batch(inputs: list[str]) -> Embeddings:
            batch = EmbeddingRequest(request.model, inputs, request.dimensions)

            async def attempt() -> Embeddings:
                return await _within(self.request_timeout, provider.embed(batch))

            async with gate:
                return await call_with_retries(attempt, self.retry)

        results = await _within(
            self.total_timeout, asyncio.gather(*(embed_batch(batch) for batch in batches))
        )
        return Embeddings(
            [vector for result in results for vector in result.vectors],
            sum(result.input_tokens for result in results),
        )

    def provider_name(self, model: str) -> str:
        return self.router.for_model(model).name

    def check(self, request: ChatRequest) -> None:
        """Refuse what no provider would answer (an unknown model, too many tokens), before
        anything is reserved or sent."""
        self._provider_for(request)

    def _provider_for(self, request: ChatRequest) -> Provider:
        if request.max_tokens > self.max_output_tokens:
            msg = f"max_tokens is {request.max_tokens}; at most {self.max_output_tokens} is allowed"
            raise APIError(400, msg, code="invalid_value", param="max_tokens")
        return self.router.for_model(request.model)


async def _within(seconds: float, awaitable: Awaitable[T]) -> T:
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError as error:
        raise ProviderTimeoutError("the LLM provider did not answer in time") from error


async def _guarded(
    events: AsyncGenerator[E, None], *, gap: float, deadline: float
) -> AsyncGenerator[E, None]:
    """The events, each of which must arrive within `gap` seconds of asking for it, and all
    of them by `deadline` (on the event loop's clock)."""
    watch = _EventWatch(gap, deadline)
    try:
        while True:
            watch.start()
            try:
                event = await anext(events)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError as error:
                if watch.stop():
                    msg = "the LLM provider stopped answering in time"
                    raise ProviderTimeoutError(msg) from error
                raise
            watch.stop()
            yield event
    finally:
        watch.close()
        # Closing the provider's generator is what stops its upstream call.
        await events.aclose()


class _EventWatch:
    """The timer of one stream's waits for events, as `asyncio.timeout` would be around
    each wait, but one timer for the stream rather than one per event: a timer per event
    costs more than the rest of an event's way through the service.

    A wait must end by its `until` (the gap, or the deadline if sooner), which only moves
    later from one wait to the next. The timer is set when a wait starts and none is set;
    when it fires during a later wait whose time has not come, it is set again for that
    wait; when it fires during a wait whose time has come, it cancels the waiting task, as a
    timeout does, and `stop` tells that cancellation from any other.
    """

    def __init__(self, gap: float, deadline: float) -> None:
        self._loop = asyncio.get_running_loop()
        # Whoever waits: the first event may be awaited by another task than the rest.
        self._task: asyncio.Task[object] | None = None
        self._gap = gap
        self._deadline = deadline
        self._until = deadline
        self._waiting = False
        self._timer: asyncio.TimerHandle | None = None
        self._fired = False
        self._cancelling = 0

    def start(self) -> None:
        self._until = min(self._loop.time() + self._gap, self._deadline)
        self._task = asyncio.current_task(self._loop)
        self._waiting = True
        if self._timer is None:
            self._timer = self._loop.call_at(self._until, self._check)

    def stop(self) -> bool:
        """End the wait; whether the task is being cancelled by this timer alone (then the
        cancellation is taken back, as `asyncio.timeout` does)."""
        self._waiting = False
        if not self._fired or self._task is None:
            return False
        self._fired = False
        return self._task.uncancel() <= self._cancelling

    def close(self) -> None:
        self.stop()
        if self._timer is not None:
            self._timer.cancel()

    def _check(self) -> None:
        self._timer = None
        if not self._waiting or self._task is None:
            return
        if self._loop.time() < self._until:
            self._timer = self._loop.call_at(self._until, self._check)
            return
        self._fired = True
        self._cancelling = self._task.cancelling()
        self._task.cancel()
