"""OpenAI-style Server-Sent Events: `chat.completion.chunk` objects, then `data: [DONE]`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

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
    from collections.abc import AsyncGenerator, AsyncIterator

    from ..llm.base import StreamEvent
    from ..settings import Settings

DONE = "[DONE]"


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


_MARK = "\x00content\x00"


def sse_response(
    events: AsyncIterator[str] | AsyncIterator[dict[str, str]], settings: Settings
) -> EventSourceResponse:
    return EventSourceResponse(
        events,
        ping=settings.sse_ping_interval,
        # On SIGTERM a stream goes on to its end for up to the grace period (sse-starlette
        # would otherwise cut it at once); the server's own timeout is longer.
        shutdown_grace_period=settings.shutdown_grace_seconds,
        # `\n\n` between events, as OpenAI sends them (sse-starlette defaults to `\r\n`).
        sep="\n",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def chat_completion_chunks(
    first: StreamEvent,
    rest: AsyncGenerator[StreamEvent, None],
    *,
    completion_id: str,
    model: str,
    created: int,
    include_usage: bool,
) -> AsyncIterator[str]:
    """The provider's events as OpenAI chunks. `first` was awaited before the response began,
    so a failure before the first token is still a plain HTTP error; a failure after it is
    sent in-band, followed by `[DONE]`, never a silently truncated 200."""

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

    content_chunk = ContentChunkTemplate(completion_id=completion_id, model=model, created=created)
    yield chunk(ChunkDelta(role="assistant", content=""))
    try:
        event: StreamEvent | None = first
        while event is not None:
            if isinstance(event, TextDelta):
                yield content_chunk.render(event.text)
            else:
                yield chunk(ChunkDelta(), finish_reason=event)
                if include_usage:
                    yield _usage_chunk(
                        event, completion_id=completion_id, model=model, created=created
                    )
            event = await anext(rest, None)
    except ProviderError as error:
        yield error_body(error.status_code, error.message, code=error.code).model_dump_json()
    finally:
        await rest.aclose()
    yield DONE


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
