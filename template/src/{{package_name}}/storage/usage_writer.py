"""Usage records written behind the answers they describe, in batches.

A call hands its record over when it ends and goes on at once: one task per process writes
what is waiting, in one statement, `linger_seconds` after the first of them arrived (at
once when `batch_size` are waiting, or someone waits for them): no answer waits for the
database, and under load a write carries many records instead of one each. Nothing handed
over is dropped on purpose:
- `flush` waits for everything handed over before it; reads of usage call it first, so a
  caller who asks right after a call sees that call (in this process; another replica's
  records are written within `linger_seconds` and a database round trip of their calls);
- while the database cannot be reached, the records wait and the write is retried; past
  `max_pending` waiting records, a call that hands one over waits for room instead;
- on shutdown, `running` writes what is waiting before the database pool closes, retrying
  for up to `drain_seconds`; whatever still cannot be written is logged, field by field, as
  `usage_record_unwritten` at error level, to be entered by hand (a record that was being
  written when time ran out may be in the database already: its id tells).
What a crash loses (the process killed without its shutdown, or out of memory) is what was
waiting: the records of calls that ended within `linger_seconds` and a write's time (tens
of milliseconds), or all of them since the database became unreachable, if it is.
A record the database refuses (not a connection failure: a bug) is logged the same way and
not retried, so that it cannot hold back the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from .usage import UsageRecord, UsageRepository

logger = structlog.get_logger(__name__)


class UsageWriter:
    def __init__(
        self,
        repository: UsageRepository,
        *,
        is_unavailable: Callable[[BaseException], bool],
        batch_size: int = 500,
        linger_seconds: float = 0.05,
        max_pending: int = 100_000,
        retry_seconds: float = 1.0,
        drain_seconds: float = 5.0,
    ) -> None:
        self.repository = repository
        self._is_unavailable = is_unavailable
        self._batch_size = batch_size
        self._linger_seconds = linger_seconds
        self._max_pending = max_pending
        self._retry_seconds = retry_seconds
        self._drain_seconds = drain_seconds
        self._pending: deque[UsageRecord] = deque()
        # Records handed over, and records done with (written or logged), since the start:
        # `flush` waits for the second to reach what the first was when it was called.
        self._handed_over = 0
        self._done = 0
        self._progress = asyncio.Condition()
        self._waiting = asyncio.Event()
        # Set when the records waiting must go without lingering.
        self._hurry = asyncio.Event()
        self._running = False
        self._stopping = False

    async def record(self, record: UsageRecord) -> None:
        """Hand a record over; returns at once unless `max_pending` are already waiting.
        Outside `running` (nothing would write it later), it is written before returning."""
        if not self._running:
            await self.repository.record_many([record])
            return
        if len(self._pending) >= self._max_pending:
            async with self._progress:
                await self._progress.wait_for(lambda: len(self._pending) < self._max_pending)
        self._pending.append(record)
        self._handed_over += 1
        self._waiting.set()
        if len(self._pending) >= self._batch_size:
            self._hurry.set()

    async def flush(self) -> None:
        """Wait until every record handed over before this call is written."""
        target = self._handed_over
        if self._done >= target:
            return
        self._hurry.set()
        async with self._progress:
            await self._progress.wait_for(lambda: self._done >= target)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[UsageWriter]:
        """Write records for as long as the service runs; then the rest, before returning."""
        task = asyncio.create_task(self._write_while_running())
        self._running = True
        try:
            yield self
        finally:
            self._stopping = True
            self._waiting.set()
            self._hurry.set()
            try:
                async with asyncio.timeout(self._drain_seconds):
                    await task
            except TimeoutError:
                pass
            finally:
                self._running = False
                self._give_up_on_the_rest()
                await self._advance(0)

    async def _write_while_running(self) -> None:
        while self._pending or not self._stopping:
            if not self._pending:
                await self._waiting.wait()
                self._waiting.clear()
                continue
            if not self._hurry.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), self._linger_seconds)
            if not self._stopping:
                self._hurry.clear()
            batch = list(itertools.islice(self._pending, self._batch_size))
            await self._write(batch)
            for _ in batch:
                self._pending.popleft()
            await self._advance(len(batch))

    async def _write(self, batch: list[UsageRecord]) -> None:
        """Retried while the database cannot be reached; after a refusal, record by record,
        so that one bad record does not hold back the others."""
        while True:
            try:
                await self.repository.record_many(batch)
            except Exception as error:  # noqa: BLE001 (whatever fails, the record is kept or logged)
                if not self._is_unavailable(error):
                    if len(batch) == 1:
                        _log_unwritten(batch[0], str(error))
                        return
                    for record in batch:
                        await self._write([record])
                    return
                logger.warning("usage_write_retrying", records=len(batch), error=str(error))
            else:
                return
            await asyncio.sleep(self._retry_seconds)

    def _give_up_on_the_rest(self) -> None:
        while self._pending:
            _log_unwritten(self._pending.popleft(), "not written before shutdown")
            self._done += 1

    async def _advance(self, done: int) -> None:
        self._done += done
        async with self._progress:
            self._progress.notify_all()


def _log_unwritten(record: UsageRecord, reason: str) -> None:
    fields = asdict(record)
    fields["created_at"] = record.created_at.isoformat()
    logger.error("usage_record_unwritten", reason=reason, **fields)
