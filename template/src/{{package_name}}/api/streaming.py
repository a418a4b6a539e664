"""OpenAI-style Server-Sent Events: `chat.completion.chunk` objects, then `data: [DONE]`.

Every stream of the service goes out through `sse_response`. On SIGTERM a stream goes on
for the grace period; one still open at its end ends with its `farewell` (an error that says
the server is shutting down, and how to resume where a stream can be), so that a client can
tell a shutdown from a dropped connection.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio
from sse_starlette import EventSourceResponse

from ..errors import error_body
from ..llm.base import StreamEnd, TextDelta
from ..llm.errors import ProviderError
from ..schemas.openai import (
    ChatCompletionChunk,
    ChatCompletionChunkChoice,
    ChunkDelta,
    CompletionUsage,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable

    from starlette.types import Message, Send

    from ..llm.base import StreamEvent
    from ..settings import Settings

DONE = "[DONE]"
SHUTTING_DOWN = "server_shutting_down"
E = TypeVar("E")


class ContentChunkTemplate:
    """The JSON of a content chunk, with only the text left to fill in.

    Most chunks of a stream are content chunks, and building each through Pydantic costs
    more than the rest of the hot path; the result is the same bytes as
    `ChatCompletionChunk(...).model_dump_json()`, which a test checks.
    """

    def __init__(self, *, completion_id: str, model: str, created: int) -> None:
        empty = ChatCompletionChunk(
            id=completion_id,
            created=created,
            model=model,
            choices=[ChatCompletionChunkChoice(delta=ChunkDelta(content=_MARK))],
        ).model_dump_json()
        self._before, self._after = empty.split(json.dumps(_MARK))

    def render(self, text: str) -> str:
        return f"{self._before}{json.dumps(text, ensure_ascii=False)}{self._after}"

    def event(self, text: str) -> str:
        return sse_event(self.render(text))


_MARK = "\x00content\x00"


def sse_response(
    events: AsyncIterator[bytes] | AsyncIterator[dict[str, str]],
    settings: Settings,
    *,
    farewell: Callable[[], str],
) -> EventSourceResponse:
    """`farewell()`: the SSE event(s) that end a stream the shutdown cuts short."""
    return _FarewellResponse(
        events,
        farewell,
        ping=settings.sse_ping_interval,
        # On SIGTERM a stream goes on to its end for up to the grace period (sse-starlette
        # would otherwise cut it at once); the server's own timeout is longer.
        shutdown_grace_period=settings.shutdown_grace_seconds,
        # `\n\n` between events, as OpenAI sends them (sse-starlette defaults to `\r\n`).
        sep="\n",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class _FarewellResponse(EventSourceResponse):
    def __init__(self, events: Any, farewell: Callable[[], str], **options: Any) -> None:
        self._shutting_down = anyio.Event()
        super().__init__(events, shutdown_event=self._shutting_down, **options)
        self._farewell = farewell

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        # sse-starlette ends a stream that the shutdown's grace period cut short with an
        # empty last body (a stream that ended by itself was ended already, and without
        # this method): the farewell goes in it.
        if (
            message["type"] == "http.response.body"
            and not message.get("more_body", False)
            and self._response_started
            and self._shutting_down.is_set()
        ):
            message = {**message, "body": self._farewell().encode()}
        await super()._send_with_timeout(send, message)


def shutting_down(message: str) -> dict[str, Any]:
    """The error envelope of a stream cut by the shutdown, as JSON data."""
    return error_body(503, message, code=SHUTTING_DOWN).model_dump(mode="json")


def chat_farewell() -> str:
    """A chat completion cannot be resumed: the error chunk, then `[DONE]`."""
    body = shutting_down("The server is shutting down: send the request again")
    return sse_event(json.dumps(body)) + sse_event(DONE)


async def chat_completion_chunks(
    first: StreamEvent,
    rest: AsyncGenerator[StreamEvent, None],
    *,
    completion_id: str,
    model: str,
    created: int,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """The provider's events as OpenAI chunks, encoded as SSE events. `first` was awaited
    before the response began, so a failure before the first token is still a plain HTTP
    error; a failure after it is sent in-band, followed by `[DONE]`, never a silently
    truncated 200. The events that are ready together go out in one write."""
    content_chunk = ContentChunkTemplate(completion_id=completion_id, model=model, created=created)

    def chunk(delta: ChunkDelta, finish_reason: StreamEnd | None = None) -> str:
        return ChatCompletionChunk(
            id=completion_id,
            created=created,
            model=model,
            choices=[
                ChatCompletionChunkChoice(
                    delta=delta,
                    finish_reason=finish_reason.finish_reason if finish_reason else None,
                )
            ],
        ).model_dump_json()

    def encoded(event: StreamEvent) -> str:
        if isinstance(event, TextDelta):
            return content_chunk.event(event.text)
        last = sse_event(chunk(ChunkDelta(), finish_reason=event))
        if include_usage:
            usage = _usage_chunk(event, completion_id=completion_id, model=model, created=created)
            last += sse_event(usage)
        return last

    try:
        yield (sse_event(chunk(ChunkDelta(role="assistant", content=""))) + encoded(first)).encode()
        async with aclosing(ready_together(rest)) as batches:
            async for batch in batches:
                yield "".join(map(encoded, batch)).encode()
        last = sse_event(DONE)
    except ProviderError as error:
        body = error_body(error.status_code, error.message, code=error.code).model_dump_json()
        last = sse_event(body) + sse_event(DONE)
    finally:
        await rest.aclose()
    yield last.encode()


def sse_event(data: str) -> str:
    """One SSE event of one line of data (JSON holds no raw line break), framed as
    sse-starlette frames it with `sep="\\n"`: sent as bytes, it goes out as it is."""
    return f"data: {data}\n\n"


async def ready_together(
    events: AsyncGenerator[E, None], *, most: int = 256
) -> AsyncGenerator[list[E], None]:
    """`events`, in lists of those that were ready together.

    A task pulls the events while the caller handles the last list, and the caller takes
    everything pulled meanwhile: when the events come faster than they are sent (a fast
    provider, a busy process), many go out in one write instead of one write each, and
    none waits for another. The task holds at most `most` events, then waits for the caller,
    so a slow client still holds the provider back. A failure comes after the events before
    it. Closing the lists stops the task and closes `events`, whose own clean-up (stopping
    the provider's call, charging what it produced) is done when this returns.
    """
    relay = _Relay(events, most)
    pulling = asyncio.create_task(relay.pull())
    try:
        while True:
            if not relay.ready and not relay.finished:
                await relay.wait_for_events()
            if relay.ready:
                batch, relay.ready = relay.ready, []
                relay.room_made()
                yield batch
            elif relay.failure is not None:
                raise relay.failure
            else:
                return
    finally:
        pulling.cancel()
        # Shielded: the stream's own cancellation must not cut the clean-up short.
        with anyio.CancelScope(shield=True):
            await asyncio.wait([pulling])


class _Relay(Generic[E]):
    """What `ready_together`'s task and its caller share: the events pulled and not yet
    taken, and a waiter on each side (the caller waits for events, the task for room)."""

    def __init__(self, events: AsyncGenerator[E, None], most: int) -> None:
        self.events = events
        self.most = most
        self.ready: list[E] = []
        self.finished = False
        self.failure: BaseException | None = None
        self._loop = asyncio.get_running_loop()
        self._taker: asyncio.Future[None] | None = None
        self._puller: asyncio.Future[None] | None = None

    async def pull(self) -> None:
        try:
            async for event in self.events:
                self.ready.append(event)
                _wake(self._taker)
                if len(self.ready) >= self.most:
                    self._puller = self._loop.create_future()
                    await self._puller
        except Exception as error:  # noqa: BLE001 (raised to the caller, in its place)
            self.failure = error
        finally:
            self.finished = True
            _wake(self._taker)
            await self.events.aclose()

    async def wait_for_events(self) -> None:
        self._taker = self._loop.create_future()
        await self._taker

    def room_made(self) -> None:
        _wake(self._puller)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _usage_chunk(end: StreamEnd, *, completion_id: str, model: str, created: int) -> str:
    return ChatCompletionChunk(
        id=completion_id,
        created=created,
        model=model,
        choices=[],
        usage=CompletionUsage(
            prompt_tokens=end.usage.input_tokens,
            completion_tokens=end.usage.output_tokens,
            total_tokens=end.usage.total_tokens,
        ),
    ).model_dump_json()
