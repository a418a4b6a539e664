"""LLM calls charged to their caller: token budgets, usage records, the response cache.

Tokens are reserved before a call (the prompt's estimate plus `max_tokens`), so concurrent
calls cannot all spend the same budget, then settled with what the provider reports. A
stream the caller abandons is still charged for the tokens it produced, and that charge is
made under a shield, so the cancellation that ends the stream cannot skip it. The call's
usage record goes to the usage writer, which writes it behind the answer
(`storage/usage_writer.py`).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio

from ..cache import is_cacheable
from ..errors import APIError
from ..llm.base import EmbeddingRequest, Embeddings, StreamEnd, TextDelta, Usage
from ..llm.tokens import count_message_tokens, count_text_tokens
from ..metrics import LLM_TIME_TO_FIRST_TOKEN, LLM_TOKENS, RATE_LIMIT_REJECTIONS
from ..storage.usage import UsageRecord
from .completions import CompletionService

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping

    from ..cache import ResponseCache
    from ..llm.base import ChatRequest, Completion, StreamEvent
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
    ) -> None:
        self.completions = completions
        self.principal = principal
        self.limits = limits
        self.limiter = limiter
        self.usage = usage
        self.cache = cache
        self.prices = prices
        self.tracer = tracer

    async def complete(self, request: ChatRequest) -> tuple[Completion, bool]:
        """The completion, and whether it came from the cache (then it is not charged)."""
        self.completions.check(request)
        cacheable = is_cacheable(request)
        if cacheable and (cached := await self.cache.get_completion(request)):
            return cached, True
        reservation = await self._reserve(
            count_message_tokens(request.messages) + request.max_tokens
        )
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
            await self.cache.put_completion(request, completion)
        return completion, False

    async def open_stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        """Reserve the tokens (a refusal is a plain 429), then the metered stream."""
        self.completions.check(request)
        reservation = await self._reserve(
            count_message_tokens(request.messages) + request.max_tokens
        )
        return self._metered_stream(request, reservation)

    async def _metered_stream(
        self, request: ChatRequest, reservation: TokenReservation
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
        cached = await self.cache.get_embeddings(request.model, request.dimensions, request.inputs)
        missing = sorted(
            {text for text, vector in zip(request.inputs, cached, strict=True) if vector is None}
        )
        if not missing:
            return Embeddings([vector for vector in cached if vector is not None], 0), True
        reservation = await self._reserve(sum(count_text_tokens(text) for text in missing))
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
        await self.cache.put_embeddings(request.model, request.dimensions, computed)
        vectors = [
            vector if vector is not None else computed[text]
            for text, vector in zip(request.inputs, cached, strict=True)
        ]
        return Embeddings(vectors, fresh.input_tokens), False

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


async def admit_request(principal: Principal, resources: Resources) -> dict[str, str]:
    """Count one request against the principal's tier (429 when over); its rate headers."""
    limits = resources.settings.tier_limits[principal.tier]
    decision = await resources.rate_limiter.admit_request(principal.rate_limit_key, limits)
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
    )
