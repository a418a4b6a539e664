from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request, Response

from ...llm.base import ChatMessage, ChatRequest
from ...schemas.openai import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChoice,
    ChatCompletionRequest,
    CompletionUsage,
)
from ..deps import SettingsDep
from ..disconnect import cancel_on_disconnect
from ..limits import MeteredCompletionsDep
from ..streaming import chat_completion_chunks, sse_response

router = APIRouter(tags=["openai"])


def to_chat_request(body: ChatCompletionRequest, default_max_tokens: int) -> ChatRequest:
    return ChatRequest(
        model=body.model,
        messages=[ChatMessage(role=m.role, content=m.text) for m in body.messages],
        max_tokens=body.max_completion_tokens or body.max_tokens or default_max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stop_sequences,
        seed=body.seed,
    )


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    response: Response,
    completions: MeteredCompletionsDep,
    settings: SettingsDep,
) -> ChatCompletion | Response:
    """OpenAI chat completions; `stream: true` answers with Server-Sent Events."""
    chat_request = to_chat_request(body, settings.llm_default_max_tokens)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if body.stream:
        events = await completions.open_stream(chat_request)
        # Waiting for the first event here keeps an early failure a plain HTTP error.
        first = await cancel_on_disconnect(request, anext(events))
        chunks = chat_completion_chunks(
            first,
            events,
            completion_id=completion_id,
            model=body.model,
            created=created,
            include_usage=bool(body.stream_options and body.stream_options.include_usage),
        )
        return sse_response(chunks, ping_interval=settings.sse_ping_interval)

    completion, cached = await cancel_on_disconnect(request, completions.complete(chat_request))
    response.headers["X-Cache"] = "hit" if cached else "miss"
    return ChatCompletion(
        id=completion_id,
        created=created,
        model=body.model,
        choices=[
            ChatCompletionChoice(
                message=AssistantMessage(content=completion.content),
                finish_reason=completion.finish_reason,
            )
        ],
        usage=CompletionUsage(
            prompt_tokens=completion.usage.input_tokens,
            completion_tokens=completion.usage.output_tokens,
            total_tokens=completion.usage.total_tokens,
        ),
    )
