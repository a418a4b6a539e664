"""The one retry loop every provider call goes through.

Exponential backoff with full jitter on retryable failures only (429, 5xx, timeouts), waiting
at least as long as the upstream's `Retry-After`. A stream is retried only until its first
event: after that the caller has seen part of an answer, and a second answer would not
continue it.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import structlog

from .errors import ProviderError

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable

T = TypeVar("T")
E = TypeVar("E")

logger = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay_before_retry(self, attempt: int, error: ProviderError) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None when it must not be tried."""
        if not error.retryable or attempt >= self.max_attempts:
            return None
        backoff = random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))  # noqa: S311 (jitter, not secrecy)
        if error.retry_after is None:
            return backoff
        if error.retry_after > self.max_delay:
            return None  # the upstream asks for longer than we wait: let the caller decide
        return max(backoff, error.retry_after)


async def call_with_retries(call: Callable[[], Awaitable[T]], policy: RetryPolicy) -> T:
    attempt = 1
    while True:
        try:
            return await call()
        except ProviderError as error:
            delay = policy.delay_before_retry(attempt, error)
            if delay is None:
                raise
            logger.warning("provider_retry", attempt=attempt, delay=delay, error=error.message)
        await asyncio.sleep(delay)
        attempt += 1


async def stream_with_retries(
    open_stream: Callable[[], AsyncGenerator[E, None]], policy: RetryPolicy
) -> AsyncGenerator[E, None]:
    attempt = 1
    while True:
        started = False
        stream = open_stream()
        try:
            async for event in stream:
                started = True
                yield event
            return
        except ProviderError as error:
            delay = None if started else policy.delay_before_retry(attempt, error)
            if delay is None:
                raise
            logger.warning("provider_retry", attempt=attempt, delay=delay, error=error.message)
        finally:
            # Closing the upstream stream is what cancels the provider's work.
            await stream.aclose()
        await asyncio.sleep(delay)
        attempt += 1
