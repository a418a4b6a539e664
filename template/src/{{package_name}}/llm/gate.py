"""A bounded number of provider calls in flight per model, handed out by tier priority.

Each process holds at most `size` calls to a model at once; callers beyond that wait in a
queue served enterprise first, then pro, then free, and in arrival order within a tier. A
caller that waits longer than the queue timeout is refused with 503 and `Retry-After`
rather than left hanging. A freed slot goes straight to the next waiter (it never becomes
free in between), so a caller arriving at that moment cannot jump the queue.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from ..errors import APIError
from ..metrics import LLM_QUEUE_DEPTH, LLM_QUEUE_TIMEOUTS, LLM_QUEUE_WAIT

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

# Lower is served first; a tier not listed waits behind all of these.
TIER_PRIORITY: dict[str, int] = {"enterprise": 0, "pro": 1, "free": 2}


class QueueTimeoutError(APIError):
    """Waited for a slot of the model's gate longer than the queue timeout."""

    def __init__(self, model: str, waited: float) -> None:
        msg = (
            f"Too many calls to {model} are in progress; waited {waited:.1f} s for a turn. "
            "Retry later"
        )
        super().__init__(
            503, msg, code="queue_timeout", headers={"Retry-After": str(max(1, math.ceil(waited)))}
        )


class ModelGate:
    def __init__(self, model: str, *, size: int, timeout: float) -> None:
        self.model = model
        self.size = size
        self.timeout = timeout
        self._free = size
        # (priority, arrival, future): the future's result is the slot, handed over.
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    @property
    def in_use(self) -> int:
        return self.size - self._free

    @property
    def idle(self) -> bool:
        return self._free == self.size and not self._waiting

    @property
    def waiting(self) -> int:
        return sum(1 for *_, future in self._waiting if not future.done())

    async def acquire(self, tier: str) -> None:
        """Wait for a slot; raises QueueTimeoutError after the timeout. The caller must
        `release()` once its call has ended."""
        if self._free and not self.waiting:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (TIER_PRIORITY.get(tier, len(TIER_PRIORITY)), next(self._arrivals), future)
        heapq.heappush(self._waiting, entry)
        depth = LLM_QUEUE_DEPTH.labels(model=self.model)
        depth.inc()
        started = time.perf_counter()
        try:
            # asyncio.wait neither cancels the future on a timeout nor on the caller's
            # cancellation, so the future still tells whether a slot was handed over.
            await asyncio.wait([future], timeout=self.timeout)
            if not future.done():
                future.cancel()
                LLM_QUEUE_TIMEOUTS.labels(model=self.model, tier=tier).inc()
                raise QueueTimeoutError(self.model, time.perf_counter() - started)
        except BaseException:
            # Cancelled while waiting: a slot handed over in the meantime goes to the next.
            if future.done() and not future.cancelled():
                self.release()
            else:
                future.cancel()
            raise
        finally:
            depth.dec()
            LLM_QUEUE_WAIT.labels(model=self.model, tier=tier).observe(
                time.perf_counter() - started
            )

    def release(self) -> None:
        while self._waiting:
            *_, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)
                return
        self._free += 1

    @asynccontextmanager
    async def slot(self, tier: str) -> AsyncIterator[None]:
        await self.acquire(tier)
        try:
            yield
        finally:
            self.release()


class ModelGates:
    """One gate per model, made on first use, sized by `sizes` or else `default_size`.

    Model names come from callers (an upstream may serve any), so idle gates are dropped
    once there are many: the map stays bounded by the calls in flight.
    """

    max_idle = 256

    def __init__(self, *, default_size: int, timeout: float, sizes: Mapping[str, int]) -> None:
        self.default_size = default_size
        self.timeout = timeout
        self.sizes = dict(sizes)
        self._gates: dict[str, ModelGate] = {}

    def __getitem__(self, model: str) -> ModelGate:
        gate = self._gates.get(model)
        if gate is None:
            if len(self._gates) >= self.max_idle:
                self._gates = {name: held for name, held in self._gates.items() if not held.idle}
            size = self.sizes.get(model, self.default_size)
            gate = self._gates[model] = ModelGate(model, size=size, timeout=self.timeout)
        return gate
