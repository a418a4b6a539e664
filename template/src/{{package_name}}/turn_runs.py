"""Streamed conversation turns that outlive their connection, for a client to resume.

A streamed turn runs in a task of the process, not in its HTTP response or its socket
session, which only read its events. Every event is numbered and kept in memory for the
readers on this replica, and written (a batch of events per round trip) to a Redis stream
that expires shortly after the turn, for readers on any replica. A client whose connection
dropped asks for the events after the last one it saw and then follows the live ones.

A turn nobody reads for the resume window is cancelled, and saved as `interrupted`, as a
turn whose caller left always was. Readers on other replicas keep a presence key fresh in
Redis, so a turn read only from elsewhere keeps running too. Redis is best effort here, as
for the fan-out: when it is away the turn goes on for the reader it has, and cannot be
resumed meanwhile. The events it missed are written once it answers again, the last of them
for up to `LAST_WRITE_SECONDS` after the turn ended, so a turn resumed after an outage is
whole and ends; past that, a reader elsewhere waits until the turn's events expire and is
told the turn is no longer kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import anyio
import structlog
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from redis.asyncio import Redis
    from redis.typing import EncodableT, FieldT

logger = structlog.get_logger(__name__)

# The kinds of event that end a turn.
FINAL_KINDS = frozenset({"done", "error", "interrupted", "cancelled"})
# How often a reader on another replica than the turn's looks for new events.
_POLL_SECONDS = 0.05
# While Redis is away: how often the events not written yet are tried again, and for how
# long after the turn's end (which shutdown waits for).
_RETRY_SECONDS = 0.25
LAST_WRITE_SECONDS = 5.0

# Forget the running turn only if it is still this one: a newer turn may have replaced it.
_FORGET_RUNNING = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class TurnEvent:
    """One event of a turn: its number (from 1), its kind, and its data as JSON."""

    seq: int
    kind: str
    data: str


@dataclass(frozen=True, slots=True)
class ResumeGap:
    """Events `first` to `last` are no longer kept (expired, or past the cap)."""

    first: int
    last: int


class TurnBuffer:
    """The turns' events in Redis: `{namespace}:{<conversation id>}:turn:<turn id>`."""

    def __init__(
        self,
        redis: Redis,
        *,
        namespace: str,
        ttl_seconds: int,
        max_events: int,
        window_seconds: float,
    ) -> None:
        self._redis = redis
        self._namespace = namespace
        self._ttl_ms = ttl_seconds * 1000
        self._max_events = max_events
        self._window_ms = max(1, round(window_seconds * 1000))
        self._failing = False

    def events_key(self, conversation_id: str, turn_id: str) -> str:
        return f"{self._namespace}:{_slot(conversation_id)}:turn:{turn_id}"

    def running_key(self, conversation_id: str) -> str:
        return f"{self._namespace}:{_slot(conversation_id)}:running"

    def readers_key(self, conversation_id: str, turn_id: str) -> str:
        return f"{self.events_key(conversation_id, turn_id)}:readers"

    async def append(
        self, conversation_id: str, turn_id: str, events: list[TurnEvent], *, again: bool = False
    ) -> bool:
        """Keep `events`, in one round trip, and point the conversation at its running turn;
        whether Redis took them. `again` after a failed write, which Redis may have carried
        out in part: the events it kept are not added twice."""
        key = self.events_key(conversation_id, turn_id)
        running = self.running_key(conversation_id)
        try:
            kept = await self._last_seq(key) if again else 0
            pipe = self._redis.pipeline(transaction=False)
            for event in events:
                if event.seq > kept:
                    fields: dict[FieldT, EncodableT] = {"kind": event.kind, "data": event.data}
                    pipe.xadd(
                        key, fields, id=f"{event.seq}-0", maxlen=self._max_events, approximate=False
                    )
            pipe.pexpire(key, self._ttl_ms)
            if events[-1].kind in FINAL_KINDS:
                pipe.eval(_FORGET_RUNNING, 1, running, turn_id)
            else:
                pipe.set(running, turn_id, px=self._ttl_ms)
            await pipe.execute()
        except RedisError as error:
            # Once per outage, not once per batch.
            if not self._failing:
                logger.warning("turn_buffer_write_failed", error=str(error))
            self._failing = True
            return False
        self._failing = False
        return True

    async def _last_seq(self, key: str) -> int:
        last = await self._redis.xrevrange(key, max="+", min="-", count=1)
        if not last:
            return 0
        entry_id, fields = cast("tuple[bytes, dict[bytes, bytes]]", last[0])
        return _event(entry_id, fields).seq

    async def running_turn(self, conversation_id: str) -> str | None:
        turn_id = await self._redis.get(self.running_key(conversation_id))
        return turn_id.decode() if isinstance(turn_id, bytes) else turn_id

    async def has_reader(self, conversation_id: str, turn_id: str) -> bool:
        try:
            return bool(await self._redis.exists(self.readers_key(conversation_id, turn_id)))
        except RedisError:
            return False

    async def after(
        self, conversation_id: str, turn_id: str, seq: int
    ) -> tuple[list[TurnEvent], bool] | None:
        """The kept events after `seq`, and whether the turn has ended; None when none of the
        turn is kept. Reading marks this replica's reader present for the resume window."""
        key = self.events_key(conversation_id, turn_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self.readers_key(conversation_id, turn_id), 1, px=self._window_ms)
        pipe.xrange(key, min=f"{seq + 1}-0", max="+")
        pipe.xrevrange(key, max="+", min="-", count=1)
        _, entries, last = await pipe.execute()
        if not last:
            return None
        events = [_event(entry_id, fields) for entry_id, fields in entries]
        return events, _event(*last[0]).kind in FINAL_KINDS

    async def follow(
        self, conversation_id: str, turn_id: str, seq: int, first: list[TurnEvent]
    ) -> AsyncIterator[list[TurnEvent] | ResumeGap | None]:
        """`first`, then the events after it until the turn's last; a gap where events were
        lost, and None (then the end) if the turn stops being kept, or Redis stops
        answering, before it ended."""
        events = first
        while True:
            if events and events[0].seq > seq + 1:
                yield ResumeGap(seq + 1, events[0].seq - 1)
            if events:
                yield events
                seq = events[-1].seq
                if events[-1].kind in FINAL_KINDS:
                    return
            await asyncio.sleep(_POLL_SECONDS)
            try:
                kept = await self.after(conversation_id, turn_id, seq)
            except RedisError as error:
                logger.warning("turn_buffer_read_failed", error=str(error))
                kept = None
            if kept is None:
                yield None
                return
            events, ended = kept
            if ended and not events:
                return


def _slot(conversation_id: str) -> str:
    """A hash tag: Redis Cluster keeps the keys of one conversation in one slot."""
    return "{" + conversation_id + "}"


def _event(entry_id: bytes, fields: dict[bytes, bytes]) -> TurnEvent:
    return TurnEvent(
        seq=int(entry_id.split(b"-")[0]),
        kind=fields[b"kind"].decode(),
        data=fields[b"data"].decode(),
    )


class TurnRun:
    """A turn running in this process: its events so far, for its readers here."""

    def __init__(
        self,
        buffer: TurnBuffer,
        conversation_id: str,
        turn_id: str,
        *,
        window_seconds: float,
        interrupted: Callable[[int], tuple[str, str]],
        last_write_seconds: float = LAST_WRITE_SECONDS,
    ) -> None:
        self.buffer = buffer
        self.conversation_id = conversation_id
        self.turn_id = turn_id
        self.events: list[TurnEvent] = []
        self.finished = False
        self._window = window_seconds
        self._interrupted = interrupted
        self._last_write_seconds = last_write_seconds
        # The caller that starts the turn counts as its reader from the start: it begins to
        # read only once its ack or response has gone out, which under load may take longer
        # than the window. Its first `follow` takes this place.
        self._readers = 1
        self._starter_waiting = True
        self._alone_since = time.monotonic()
        # Set while nobody here reads the turn: only then does the watcher look at the time.
        self._alone = asyncio.Event()
        self._changed = asyncio.Event()
        self._abandoned = False
        self.task: asyncio.Task[None] | None = None

    async def follow(self, seq: int) -> AsyncIterator[list[TurnEvent]]:
        """The events after `seq`, in lists of those that came together, to the last."""
        if self._starter_waiting:
            self._starter_waiting = False
        else:
            self._readers += 1
        self._alone.clear()
        try:
            while True:
                if len(self.events) > seq:
                    batch = self.events[seq:]
                    seq += len(batch)
                    yield batch
                elif self.finished:
                    return
                else:
                    await self._changed.wait()
        finally:
            self._readers -= 1
            if not self._readers:
                self._alone_since = time.monotonic()
                self._alone.set()

    def starter_gone(self) -> None:
        """The caller that started the turn left before it began to read it: from now on the
        turn is unread, and given up after the window unless someone resumes it."""
        if self._starter_waiting:
            self._starter_waiting = False
            self._readers -= 1
            if not self._readers:
                self._alone_since = time.monotonic()
                self._alone.set()

    async def run(self, events: AsyncIterator[tuple[str, str]]) -> None:
        this = asyncio.current_task()
        assert this is not None  # noqa: S101 (run is always a task's coroutine)
        writing = asyncio.create_task(self._write())
        watching = asyncio.create_task(self._watch(this))
        try:
            async for kind, data in events:
                self._add(kind, data)
        except asyncio.CancelledError:
            # The turn's own clean-up has saved it as interrupted by now.
            self._add(*self._interrupted(len(self.events) + 1))
            if not self._abandoned:
                raise
            this.uncancel()
        finally:
            watching.cancel()
            self.finished = True
            self._wake()
            # Shielded: the last events are written even when shutting down.
            with anyio.CancelScope(shield=True):
                await asyncio.wait([writing, watching])

    def cancel(self) -> None:
        """Stop the turn now (its caller asked to): saved as interrupted, as when abandoned."""
        if self.task is not None and not self.finished:
            self._abandoned = True
            self.task.cancel()

    def _add(self, kind: str, data: str) -> None:
        self.events.append(TurnEvent(len(self.events) + 1, kind, data))
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _write(self) -> None:
        """Write the events as they come, all those that came during a write in the next;
        those a failed write missed go with the next try, so an outage delays them rather
        than losing them."""
        written = 0
        failed = False
        gives_up_at: float | None = None
        while True:
            if len(self.events) > written:
                batch = self.events[written:]
                if await self.buffer.append(
                    self.conversation_id, self.turn_id, batch, again=failed
                ):
                    written += len(batch)
                    failed = False
                    continue
                failed = True
                if self.finished:
                    gives_up_at = gives_up_at or time.monotonic() + self._last_write_seconds
                    if time.monotonic() >= gives_up_at:
                        logger.warning("turn_buffer_gave_up", turn_id=self.turn_id)
                        return
                await asyncio.sleep(_RETRY_SECONDS)
            elif self.finished:
                return
            else:
                await self._changed.wait()

    async def _watch(self, run: asyncio.Task[None]) -> None:
        """Cancel the turn once nobody, here or on another replica, read it for the window."""
        while True:
            await self._alone.wait()
            await asyncio.sleep(self._window / 2)
            if self._readers or time.monotonic() - self._alone_since < self._window:
                continue
            if await self.buffer.has_reader(self.conversation_id, self.turn_id):
                continue
            self._abandoned = True
            run.cancel()
            return


class TurnRuns:
    """The streamed turns this process runs, by turn id."""

    def __init__(
        self,
        buffer: TurnBuffer,
        *,
        window_seconds: float,
        last_write_seconds: float = LAST_WRITE_SECONDS,
    ) -> None:
        self.buffer = buffer
        self._window = window_seconds
        self._last_write_seconds = last_write_seconds
        self._runs: dict[str, TurnRun] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, conversation_id: str, turn_id: str) -> TurnRun | None:
        run = self._runs.get(turn_id)
        return run if run is not None and run.conversation_id == conversation_id else None

    def start(
        self,
        conversation_id: str,
        turn_id: str,
        events: AsyncIterator[tuple[str, str]],
        *,
        interrupted: Callable[[int], tuple[str, str]],
    ) -> TurnRun:
        run = TurnRun(
            self.buffer,
            conversation_id,
            turn_id,
            window_seconds=self._window,
            interrupted=interrupted,
            last_write_seconds=self._last_write_seconds,
        )
        task = run.task = asyncio.create_task(run.run(events), name=f"turn-{turn_id}")
        self._runs[turn_id] = run
        self._tasks.add(task)

        def forget(done: asyncio.Task[None]) -> None:
            self._tasks.discard(done)
            self._runs.pop(turn_id, None)
            if not done.cancelled() and done.exception() is not None:
                logger.error("turn_run_failed", turn_id=turn_id, exc_info=done.exception())

        task.add_done_callback(forget)
        return run

    @asynccontextmanager
    async def running(self) -> AsyncIterator[TurnRuns]:
        """On shutdown, the turns still running are cancelled, and saved as interrupted."""
        try:
            yield self
        finally:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)
