"""LLM calls charged to their caller: token budgets, usage records, the response cache.

Tokens are reserved before a call and settled with what the provider reports; an abandoned
stream is still charged, under a shield. Each call waits for a slot of its model's gate
(`llm/gate.py`) between the reservation and the call. The usage record is written behind
the answer (`storage/usage_writer.py`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, overload

import anyio

from ..cache import is_cacheable
from ..errors import APIError
from ..llm.base import EmbeddingRequest, Embeddings, StreamEnd, TextDelta, Usage
from ..llm.tokens import count_message_tokens, count_text_tokens
from ..metrics import LLM_TIME_TO_FIRST_TOKEN, LLM_TOKENS, RATE_LIMIT_REJECTIONS
from ..storage.usage import UsageRecord
from .completions import CompletionService

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
    from types import TracebackType

    from ..cache import ResponseCache
    from ..llm.base import ChatRequest, Completion, StreamEvent
    from ..llm.gate import ModelGate, ModelGates
    from ..ratelimit import RateLimiter, TierLimits, TokenReservation
    from ..resources import Resources
    from ..security.principal import Principal
    from ..settings import ModelPrice
    from ..storage.usage_writer import UsageWriter
    from ..tracing import GenAITracer


class MeteredCompletions:
    def __init__(
        self,
        completions: CompletionService,
        *,
        principal: Principal,
        limits: TierLimits,
        limiter: RateLimiter,
        usage: UsageWriter,
        cache: ResponseCache,
        prices: Mapping[str, ModelPrice],
        tracer: GenAITracer,
        gates: ModelGates,
    ) -> None:
        self.completions = completions
        self.principal = principal
        self.limits = limits
        self.limiter = limiter
        self.usage = usage
        self.cache = cache
        self.prices = prices
        self.tracer = tracer
        self.gates = gates

    @property
    def _owner(self) -> str:
        """Whose cache entries this caller reads and writes: its own alone, as its limits
        know it (a user; without authentication, a client address)."""
        return self.principal.rate_limit_key

    async def complete(self, request: ChatRequest) -> tuple[Completion, bool]:
        """The completion, and whether it came from the cache (then it is not charged)."""
        self.completions.check(request)
        cacheable = is_cacheable(request)
        if cacheable and (cached := await self.cache.get_completion(self._owner, request)):
            return cached, True
        reservation = await self._reserve(
            count_message_tokens(request.messages) + request.max_tokens
        )
        async with self._slot(request.model, reservation):
            started = time.perf_counter()
            span = self.tracer.start_chat(
                request, provider=self.completions.provider_name(request.model), streaming=False
            )
            try:
                completion = await self.completions.complete(request)
            except BaseException as error:
                self.tracer.finish(span, None, error=error)
                with anyio.CancelScope(shield=True):
                    await self.limiter.reconcile(reservation, 0)
                raise
        self.tracer.finish(
            span,
            completion.usage,
            finish_reasons=[completion.finish_reason],
            output=completion.content,
        )
        await self._charge(reservation, request.model, completion.usage, started, "complete")
        if cacheable:
            await self.cache.put_completion(self._owner, request, completion)
        return completion, False

    async def open_stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        """Reserve the tokens (a refusal is a plain 429), then the metered stream."""
        self.completions.check(request)
        reservation = await self._reserve(
            count_message_tokens(request.messages) + request.max_tokens
        )
        gate = self.gates[request.model]
        await self._acquire(gate, reservation)

        async def abandon() -> None:
            gate.release()
            await self.limiter.reconcile(reservation, 0)

        return _HeldStream(self._metered_stream(request, reservation, gate), abandon)

    async def _metered_stream(
        self, request: ChatRequest, reservation: TokenReservation, gate: ModelGate
    ) -> AsyncGenerator[StreamEvent, None]:
        started = time.perf_counter()
        span = self.tracer.start_chat(
            request, provider=self.completions.provider_name(request.model), streaming=True
        )
        pieces: list[str] = []
        end: StreamEnd | None = None
        failure: BaseException | None = None
        try:
            async for event in self.completions.stream(request):
                if isinstance(event, TextDelta):
                    if not pieces:
                        LLM_TIME_TO_FIRST_TOKEN.labels(model=request.model).observe(
                            time.perf_counter() - started
                        )
                    pieces.append(event.text)
                else:
                    end = event
                yield event
        except BaseException as error:
            failure = error
            raise
        finally:
            gate.release()
            usage = end.usage if end is not None else None
            self.tracer.finish(
                span,
                usage,
                finish_reasons=[end.finish_reason] if end is not None else [],
                output="".join(pieces),
                error=failure,
            )
            with anyio.CancelScope(shield=True):
                if usage is not None:
                    await self._charge(reservation, request.model, usage, started, "complete")
                elif pieces:
                    # Cut off: charged for the tokens it did produce.
                    produced = Usage(
                        count_message_tokens(request.messages), count_text_tokens("".join(pieces))
                    )
                    await self._charge(reservation, request.model, produced, started, "interrupted")
                else:
                    await self.limiter.reconcile(reservation, 0)

    async def embed(self, request: EmbeddingRequest) -> tuple[Embeddings, bool]:
        """The embeddings, and whether they all came from the cache."""
        cached = await self.cache.get_embeddings(
            self._owner, request.model, request.dimensions, request.inputs
        )
        missing = sorted(
            {text for text, vector in zip(request.inputs, cached, strict=True) if vector is None}
        )
        if not missing:
            return Embeddings([vector for vector in cached if vector is not None], 0), True
        reservation = await self._reserve(sum(count_text_tokens(text) for text in missing))
        async with self._slot(request.model, reservation):
            started = time.perf_counter()
            span = self.tracer.start_embeddings(
                request.model,
                provider=self.completions.provider_name(request.model),
                inputs=len(missing),
            )
            try:
                fresh = await self.completions.embed(
                    EmbeddingRequest(request.model, missing, request.dimensions)
                )
            except BaseException as error:
                self.tracer.finish(span, None, error=error)
                with anyio.CancelScope(shield=True):
                    await self.limiter.reconcile(reservation, 0)
                raise
        self.tracer.finish(span, Usage(fresh.input_tokens, 0))
        await self._charge(
            reservation, request.model, Usage(fresh.input_tokens, 0), started, "complete"
        )
        computed = dict(zip(missing, fresh.vectors, strict=True))
        await self.cache.put_embeddings(self._owner, request.model, request.dimensions, computed)
        vectors = [
            vector if vector is not None else computed[text]
            for text, vector in zip(request.inputs, cached, strict=True)
        ]
        return Embeddings(vectors, fresh.input_tokens), False

    async def _acquire(self, gate: ModelGate, reservation: TokenReservation) -> None:
        """A slot of the model's gate; a call that gets none gives its reservation back."""
        try:
            await gate.acquire(self.principal.tier)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.limiter.reconcile(reservation, 0)
            raise

    @asynccontextmanager
    async def _slot(self, model: str, reservation: TokenReservation) -> AsyncIterator[None]:
        gate = self.gates[model]
        await self._acquire(gate, reservation)
        try:
            yield
        finally:
            gate.release()

    async def _reserve(self, tokens: int) -> TokenReservation:
        reservation = await self.limiter.reserve_tokens(
            self.principal.rate_limit_key, self.limits, tokens
        )
        decision = reservation.decision
        if decision.allowed:
            return reservation
        RATE_LIMIT_REJECTIONS.labels(limit="tokens", tier=self.principal.tier).inc()
        if decision.too_large:
            msg = (
                f"This request needs up to {tokens} tokens, more than the "
                f"{self.principal.tier} tier allows per minute ({self.limits.tokens_per_minute})"
            )
            raise APIError(429, msg, code="request_too_large", headers=decision.headers())
        msg = f"Token rate limit of the {self.principal.tier} tier reached; retry later"
        raise APIError(429, msg, code="rate_limit_exceeded", headers=decision.headers())

    async def _charge(
        self,
        reservation: TokenReservation,
        model: str,
        usage: Usage,
        started: float,
        status: str,
    ) -> None:
        await self.limiter.reconcile(reservation, usage.total_tokens)
        LLM_TOKENS.labels(model=model, direction="input").inc(usage.input_tokens)
        LLM_TOKENS.labels(model=model, direction="output").inc(usage.output_tokens)
        price = self.prices.get(model)
        cost = (
            (
                usage.input_tokens * price.input_per_million
                + usage.output_tokens * price.output_per_million
            )
            / 1_000_000
            if price
            else 0.0
        )
        await self.usage.record(
            UsageRecord(
                principal_id=self.principal.id,
                model=model,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                latency_ms=round((time.perf_counter() - started) * 1000, 2),
                cost=cost,
                status=status,
                created_at=datetime.now(UTC),
            )
        )


class _HeldStream(AsyncGenerator["StreamEvent", None]):
    """A metered stream that holds a gate slot and a token reservation from before its
    first event. Its generator gives both back when it ends; but a generator closed before
    it started runs none of its body, so that case is caught here."""

    def __init__(
        self, events: AsyncGenerator[StreamEvent, None], abandon: Callable[[], Awaitable[None]]
    ) -> None:
        self._events = events
        self._abandon: Callable[[], Awaitable[None]] | None = abandon

    async def asend(self, value: None) -> StreamEvent:
        self._abandon = None
        return await self._events.asend(value)

    @overload
    async def athrow(
        self,
        typ: type[BaseException],
        val: BaseException | object = None,
        tb: TracebackType | None = None,
        /,
    ) -> StreamEvent: ...

    @overload
    async def athrow(
        self, typ: BaseException, val: None = None, tb: TracebackType | None = None, /
    ) -> StreamEvent: ...

    async def athrow(self, typ: Any, val: Any = None, tb: TracebackType | None = None, /) -> Any:
        await self._give_back_unstarted()
        if val is None and tb is None:
            return await self._events.athrow(typ)
        return await self._events.athrow(typ, val, tb)

    async def aclose(self) -> None:
        # The generator's own aclose: the ABC's, by way of athrow, misreads a finished one.
        await self._give_back_unstarted()
        await self._events.aclose()

    async def _give_back_unstarted(self) -> None:
        if (abandon := self._abandon) is not None:
            self._abandon = None
            with anyio.CancelScope(shield=True):
                await abandon()


async def admit_request(
    principal: Principal, resources: Resources, *, requests: str = "rpm"
) -> dict[str, str]:
    """Count one request against the principal's tier (429 when over); its rate headers.
    `requests` names the bucket counted: a job's items count in `jobs-rpm`."""
    limits = resources.settings.tier_limits[principal.tier]
    decision = await resources.rate_limiter.admit_request(
        principal.rate_limit_key, limits, requests=requests
    )
    if not decision.allowed:
        RATE_LIMIT_REJECTIONS.labels(limit="requests", tier=principal.tier).inc()
        msg = (
            f"Rate limit of the {principal.tier} tier reached "
            f"({limits.requests_per_minute} requests per minute); retry later"
        )
        raise APIError(429, msg, code="rate_limit_exceeded", headers=decision.headers())
    return decision.headers()


def metered_completions(
    resources: Resources, principal: Principal, completions: CompletionService | None = None
) -> MeteredCompletions:
    """The principal's LLM calls, charged to its tier's budget, wherever they are made."""
    settings = resources.settings
    return MeteredCompletions(
        completions or CompletionService.from_settings(resources.llm, settings),
        principal=principal,
        limits=settings.tier_limits[principal.tier],
        limiter=resources.rate_limiter,
        usage=resources.usage,
        cache=resources.cache,
        prices=settings.model_prices,
        tracer=resources.tracer,
        gates=resources.gates,
    )
