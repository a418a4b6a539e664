from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request, Response

from ...errors import error_responses
from ...llm.errors import PROVIDER_ERROR_STATUSES
from ...schemas.openai import ChatCompletion, ChatCompletionRequest
from ..deps import SettingsDep
from ..disconnect import cancel_on_disconnect
from ..limits import LIMITED_ROUTE_ERRORS, MeteredCompletionsDep
from ..streaming import chat_completion_chunks, chat_farewell, sse_response

router = APIRouter(tags=["openai"], responses=LIMITED_ROUTE_ERRORS)


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={
        200: {"content": {"text/event-stream": {}}},
        **error_responses(*PROVIDER_ERROR_STATUSES),
    },
)
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    response: Response,
    completions: MeteredCompletionsDep,
    settings: SettingsDep,
) -> ChatCompletion | Response:
    """OpenAI chat completions; `stream: true` answers with Server-Sent Events."""
    chat_request = body.to_chat_request(settings.llm_default_max_tokens)
    if body.stream:
        events = await completions.open_stream(chat_request)
        # Waiting for the first event here keeps an early failure a plain HTTP error.
        first = await cancel_on_disconnect(request, anext(events))
        chunks = chat_completion_chunks(
            first,
            events,
            completion_id=f"chatcmpl-{uuid.uuid4().hex}",
            model=body.model,
            created=int(time.time()),
            include_usage=bool(body.stream_options and body.stream_options.include_usage),
        )
        return sse_response(chunks, settings, farewell=chat_farewell)

    completion, cached = await cancel_on_disconnect(request, completions.complete(chat_request))
    response.headers["X-Cache"] = "hit" if cached else "miss"
    return ChatCompletion.of(completion, model=body.model)
