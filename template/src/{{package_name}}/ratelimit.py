"""Rate limits per caller ("principal") that hold across every replica of the service.

Each limit is a GCRA bucket kept in Redis as one timestamp, checked and updated by one Lua
script on Redis's clock. Tokens are reserved before a call and settled with the provider's
usage afterwards, batched every `settle_seconds`. Keys are
`<namespace>:{<principal>}:rpm|jobs-rpm|tpm|tpd`; headers follow OpenAI's
`x-ratelimit-*`. Why GCRA, and what settling trades: docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from redis.asyncio import Redis

logger = structlog.get_logger(__name__)

_DAY_SECONDS = 86_400.0

# KEYS[i]: a limit's bucket. ARGV[4i-3], ARGV[4i-2], ARGV[4i-1]: that limit, its period in
# ms and the cost against it; ARGV[4i]: units settled first, whatever the decision (as
# _ADJUST settles them). The costs are taken from every bucket or from none.
# Returns {admitted, retry_after_ms, then remaining and reset_ms for each bucket in turn};
# retry_after_ms is -1 when a cost exceeds its limit outright, since no wait admits it.
_ACQUIRE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
-- Float rounding (a Unix time in ms, in a double) must not cost a caller a limit's last unit.
local slack = 0.001

local admitted, retry_after, buckets = 1, 0, {}
for i, key in ipairs(KEYS) do
  local limit, period = tonumber(ARGV[4*i-3]), tonumber(ARGV[4*i-2])
  local cost, settled = tonumber(ARGV[4*i-1]), tonumber(ARGV[4*i])
  local interval = period / limit
  local backlog = math.max((tonumber(redis.call('GET', key)) or now) - now, 0)
  backlog = math.max(backlog + settled * interval, 0)
  local free = math.max(math.floor((period - backlog) / interval + slack), 0)
  if cost > limit then
    admitted, retry_after = 0, -1
  elseif cost > free then
    admitted = 0
    if retry_after >= 0 then
      retry_after = math.max(retry_after, backlog + cost * interval - period)
    end
  end
  buckets[i] = {
    key = key, period = period, interval = interval, cost = cost, settled = settled,
    backlog = backlog,
  }
end

local reply = {admitted, math.ceil(retry_after)}
for _, bucket in ipairs(buckets) do
  local backlog = bucket.backlog
  local taken = admitted == 1 and bucket.cost > 0
  if taken then
    backlog = backlog + bucket.cost * bucket.interval
  end
  if taken or bucket.settled ~= 0 then
    if backlog > 0 then
      redis.call('SET', bucket.key, string.format('%.17g', now + backlog), 'PX', math.ceil(backlog))
    else
      redis.call('DEL', bucket.key)
    end
  end
  local remaining = math.floor((bucket.period - backlog) / bucket.interval + slack)
  table.insert(reply, math.max(remaining, 0))
  table.insert(reply, math.ceil(backlog))
end
return reply
"""

# KEYS and ARGV as for _ACQUIRE, the cost being the units to add (negative: to give back).
# A bucket is never refunded beyond full: tokens that have already refilled stay refilled.
_ADJUST = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000

for i, key in ipairs(KEYS) do
  local limit, period, units = tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i])
  local backlog = math.max((tonumber(redis.call('GET', key)) or now) - now, 0)
  backlog = backlog + units * period / limit
  if backlog > 0 then
    redis.call('SET', key, string.format('%.17g', now + backlog), 'PX', math.ceil(backlog))
  else
    redis.call('DEL', key)
  end
end
"""


class RateLimiterUnavailableError(Exception):
    """Redis did not answer and the limiter fails closed: no limit can be enforced (503)."""


@dataclass(frozen=True, slots=True)
class TierLimits:
    requests_per_minute: int
    tokens_per_minute: int
    tokens_per_day: int

    def __post_init__(self) -> None:
        # A limit of zero would be a refill interval of infinity in the bucket arithmetic.
        if min(self.requests_per_minute, self.tokens_per_minute, self.tokens_per_day) < 1:
            msg = f"every limit must be at least 1; got {self}"
            raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class WindowState:
    """One limit as the caller sees it after a decision."""

    limit: int
    remaining: int
    reset_after: float  # seconds until the whole limit is available again


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    # Seconds until the same call would be admitted; None when allowed, or when its cost is
    # larger than a limit itself, which no wait can admit.
    retry_after: float | None
    requests: WindowState
    tokens: WindowState  # per minute
    daily_tokens: WindowState

    @property
    def too_large(self) -> bool:
        """Denied for good: the call costs more than a whole limit."""
        return not self.allowed and self.retry_after is None

    def headers(self) -> dict[str, str]:
        """OpenAI's rate-limit headers, and `Retry-After` when the call may be retried."""
        headers = {
            "x-ratelimit-limit-requests": str(self.requests.limit),
            "x-ratelimit-remaining-requests": str(self.requests.remaining),
            "x-ratelimit-reset-requests": format_reset(self.requests.reset_after),
            "x-ratelimit-limit-tokens": str(self.tokens.limit),
            "x-ratelimit-remaining-tokens": str(self.tokens.remaining),
            "x-ratelimit-reset-tokens": format_reset(self.tokens.reset_after),
        }
        if self.retry_after is not None:
            headers["Retry-After"] = str(math.ceil(self.retry_after))
        return headers


@dataclass(frozen=True, slots=True)
class TokenReservation:
    principal: str
    limits: TierLimits
    reserved: int  # what reconcile settles against: 0 when nothing was taken
    decision: RateDecision


@dataclass(slots=True)
class _Unsettled:
    limits: TierLimits
    units: int


@dataclass(frozen=True, slots=True)
class _Bucket:
    key: str
    limit: int
    period_ms: float


def format_reset(seconds: float) -> str:
    """A duration as OpenAI writes its reset headers (Go's format): 17ms, 1.5s, 6m0s, 1h2m3s."""
    milliseconds = math.ceil(seconds * 1000)
    if milliseconds < 1000:
        return f"{milliseconds}ms" if milliseconds else "0s"
    minutes, milliseconds = divmod(milliseconds, 60_000)
    hours, minutes = divmod(minutes, 60)
    whole_seconds = f"{milliseconds / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{whole_seconds}"
    if minutes:
        return f"{minutes}m{whole_seconds}"
    return whole_seconds


class RateLimiter:
    """Requests per minute, and tokens per minute and per day, for each principal.

    `fail_open` decides what happens when Redis cannot be reached: admit every call (and log
    a warning) or raise `RateLimiterUnavailableError`. `minute_window_seconds` is the period
    of the two per-minute limits; only tests want it shorter. `settle_seconds` is how long a
    reconciliation may wait for the caller's next check before it is applied on its own.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        namespace: str,
        fail_open: bool,
        minute_window_seconds: float = 60.0,
        settle_seconds: float = 0.05,
    ) -> None:
        self._redis = redis
        self._acquire = redis.register_script(_ACQUIRE)
        self._adjust = redis.register_script(_ADJUST)
        self._namespace = namespace
        self._fail_open = fail_open
        self._minute_ms = minute_window_seconds * 1000
        self._settle_seconds = settle_seconds
        # Token units reconciled and not yet applied, per principal (while `settling` runs).
        self._unsettled: dict[str, _Unsettled] = {}
        self._settling = False
        self._due = asyncio.Event()
        self._stopping = asyncio.Event()

    async def admit_request(
        self, principal: str, limits: TierLimits, *, requests: str = "rpm"
    ) -> RateDecision:
        """Count one request against requests per minute (those of the `requests` bucket:
        a job's items have one of their own, so they never use up their caller's).

        The token limits are only read, so that the decision has every header's value.
        """
        buckets = self._buckets(principal, limits, requests=requests)
        reply = await self._take(principal, buckets, (1, 0, 0))
        return _decision(reply, buckets) if reply is not None else _unchecked(buckets)

    async def reserve_tokens(
        self, principal: str, limits: TierLimits, tokens: int
    ) -> TokenReservation:
        """Take `tokens` from both the minute and the day budget, or from neither.

        Reserve what the call may use at most (the prompt estimate plus `max_tokens`), so
        that concurrent calls cannot all spend the same remainder; `reconcile` settles it.
        """
        buckets = self._buckets(principal, limits)
        reply = await self._take(principal, buckets, (0, tokens, tokens))
        if reply is None:
            # Nothing was taken, so reconciling will charge the tokens actually used.
            return TokenReservation(principal, limits, 0, _unchecked(buckets))
        decision = _decision(reply, buckets)
        return TokenReservation(principal, limits, tokens if decision.allowed else 0, decision)

    async def reconcile(self, reservation: TokenReservation, used_tokens: int) -> None:
        """Settle a reservation with the tokens the call used, finished or cut off.

        While `settling` runs, the settlement waits for the caller's next check here, or
        `settle_seconds` (see the module's docstring); otherwise it is applied at once.
        Never raises for Redis: the answer has been given by now, and an adjustment that was
        lost only lasts until the buckets refill.
        """
        units = used_tokens - reservation.reserved
        if units == 0:
            return
        if not self._settling:
            await self._settle({reservation.principal: _Unsettled(reservation.limits, units)})
            return
        unsettled = self._unsettled.get(reservation.principal)
        if unsettled is None:
            self._unsettled[reservation.principal] = _Unsettled(reservation.limits, units)
        else:
            unsettled.units += units
        self._due.set()

    @asynccontextmanager
    async def settling(self) -> AsyncIterator[None]:
        """Let reconciliations wait to be applied, for as long as the service runs; apply
        what waits before returning."""
        task = asyncio.create_task(self._settle_while_running())
        self._settling = True
        try:
            yield
        finally:
            self._settling = False
            self._stopping.set()
            self._due.set()
            await task

    async def _settle_while_running(self) -> None:
        while not self._stopping.is_set():
            await self._due.wait()
            # Meanwhile a caller's next check may take its settlement along.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._settle_seconds)
            self._due.clear()
            unsettled, self._unsettled = self._unsettled, {}
            await self._settle(unsettled)
        # Those reconciled while the last ones were being applied.
        unsettled, self._unsettled = self._unsettled, {}
        await self._settle(unsettled)

    async def _settle(self, unsettled: dict[str, _Unsettled]) -> None:
        """Apply these settlements, in one round trip."""
        if not unsettled:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipeline:
                for principal, settlement in unsettled.items():
                    buckets = self._buckets(principal, settlement.limits)[1:]
                    await self._adjust(
                        keys=[b.key for b in buckets],
                        args=_adjust_args(buckets, settlement.units),
                        client=pipeline,
                    )
                await pipeline.execute()
        except RedisError as error:
            for principal, settlement in unsettled.items():
                _settlement_lost(principal, settlement.units, error)

    async def take_attempt(self, key: str, *, limit: int, period_seconds: float) -> float | None:
        """Count one attempt against a limit of its own, `limit` per `period_seconds` (one
        client's sign-ins, say): None when admitted, else the seconds until one would be.
        `key` must be free of braces (callers pass a digest)."""
        bucket = self._attempts_bucket(key, limit, period_seconds)
        try:
            reply: list[int] = await self._acquire(
                keys=[bucket.key], args=_acquire_args((bucket,), (1,), (0,))
            )
        except RedisError as error:
            if not self._fail_open:
                msg = "the rate limiter cannot reach Redis"
                raise RateLimiterUnavailableError(msg) from error
            logger.warning("rate_limiter_unavailable", key=key, error=str(error))
            return None
        admitted, retry_after_ms = reply[0], reply[1]
        return None if admitted else max(retry_after_ms, 0) / 1000

    async def give_back_attempt(self, key: str, *, limit: int, period_seconds: float) -> None:
        """Take back one attempt `take_attempt` counted (one that turned out to be good)."""
        bucket = self._attempts_bucket(key, limit, period_seconds)
        try:
            await self._adjust(keys=[bucket.key], args=_adjust_args((bucket,), -1))
        except RedisError as error:
            logger.warning("rate_limit_give_back_failed", key=key, error=str(error))

    def _attempts_bucket(self, key: str, limit: int, period_seconds: float) -> _Bucket:
        hash_tag = "{" + key + "}"
        return _Bucket(f"{self._namespace}:{hash_tag}:attempts", limit, period_seconds * 1000)

    async def _take(
        self, principal: str, buckets: Sequence[_Bucket], costs: Sequence[int]
    ) -> list[int] | None:
        """The script's reply, or None when Redis failed and the limiter fails open. The
        principal's waiting settlement is applied by the same script."""
        unsettled = self._unsettled.pop(principal, None)
        settled = (0, unsettled.units, unsettled.units) if unsettled else (0, 0, 0)
        try:
            reply: list[int] = await self._acquire(
                keys=[b.key for b in buckets], args=_acquire_args(buckets, costs, settled)
            )
        except RedisError as error:
            if unsettled is not None:
                _settlement_lost(principal, unsettled.units, error)
            if not self._fail_open:
                msg = "the rate limiter cannot reach Redis"
                raise RateLimiterUnavailableError(msg) from error
            logger.warning("rate_limiter_unavailable", principal=principal, error=str(error))
            return None
        return reply

    def _buckets(
        self, principal: str, limits: TierLimits, *, requests: str = "rpm"
    ) -> tuple[_Bucket, _Bucket, _Bucket]:
        hash_tag = "{" + principal + "}"
        prefix = f"{self._namespace}:{hash_tag}"
        return (
            _Bucket(f"{prefix}:{requests}", limits.requests_per_minute, self._minute_ms),
            _Bucket(f"{prefix}:tpm", limits.tokens_per_minute, self._minute_ms),
            _Bucket(f"{prefix}:tpd", limits.tokens_per_day, _DAY_SECONDS * 1000),
        )


def _acquire_args(
    buckets: Sequence[_Bucket], costs: Sequence[int], settled: Sequence[int]
) -> list[float]:
    return [
        value
        for bucket, cost, units in zip(buckets, costs, settled, strict=True)
        for value in (bucket.limit, bucket.period_ms, cost, units)
    ]


def _adjust_args(buckets: Sequence[_Bucket], units: int) -> list[float]:
    return [value for bucket in buckets for value in (bucket.limit, bucket.period_ms, units)]


def _settlement_lost(principal: str, units: int, error: RedisError) -> None:
    logger.warning(
        "rate_limit_reconcile_failed", principal=principal, tokens=units, error=str(error)
    )


def _decision(reply: Sequence[int], buckets: Sequence[_Bucket]) -> RateDecision:
    admitted, retry_after_ms, *states = reply
    requests, tokens, daily_tokens = (
        WindowState(bucket.limit, remaining, reset_ms / 1000)
        for bucket, remaining, reset_ms in zip(buckets, states[0::2], states[1::2], strict=True)
    )
    denied_for_now = not admitted and retry_after_ms >= 0
    return RateDecision(
        allowed=bool(admitted),
        retry_after=retry_after_ms / 1000 if denied_for_now else None,
        requests=requests,
        tokens=tokens,
        daily_tokens=daily_tokens,
    )


def _unchecked(buckets: Sequence[_Bucket]) -> RateDecision:
    """Admitted without Redis: the headers show every limit as untouched."""
    requests, tokens, daily_tokens = (WindowState(b.limit, b.limit, 0.0) for b in buckets)
    return RateDecision(True, None, requests, tokens, daily_tokens)
