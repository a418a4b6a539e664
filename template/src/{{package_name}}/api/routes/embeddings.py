from __future__ import annotations

import base64
import struct

from fastapi import APIRouter, Request, Response

from ...errors import APIError, error_responses
from ...llm.base import EmbeddingRequest
from ...llm.errors import PROVIDER_ERROR_STATUSES
from ...schemas.openai import EmbeddingItem, EmbeddingsRequest, EmbeddingsResponse, EmbeddingsUsage
from ..disconnect import cancel_on_disconnect
from ..limits import LIMITED_ROUTE_ERRORS, MeteredCompletionsDep

router = APIRouter(tags=["openai"], responses=LIMITED_ROUTE_ERRORS)

MAX_INPUTS = 2048  # OpenAI's own limit per request


def texts_of(body: EmbeddingsRequest) -> list[str]:
    inputs = [body.input] if isinstance(body.input, str) else body.input
    if not inputs:
        raise APIError(400, "input must not be empty", code="invalid_value", param="input")
    if len(inputs) > MAX_INPUTS:
        msg = f"input has {len(inputs)} items; at most {MAX_INPUTS} are allowed"
        raise APIError(400, msg, code="invalid_value", param="input")
    texts = [item for item in inputs if isinstance(item, str)]
    if len(texts) != len(inputs):
        msg = "token arrays are not supported as input; send the text"
        raise APIError(400, msg, code="invalid_value", param="input")
    if any(not text for text in texts):
        raise APIError(400, "input must not contain empty strings", param="input")
    return texts


def encode(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        # Little-endian float32, which is what OpenAI's SDKs decode.
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


@router.post("/embeddings", responses=error_responses(*PROVIDER_ERROR_STATUSES))
async def create_embeddings(
    body: EmbeddingsRequest,
    request: Request,
    response: Response,
    completions: MeteredCompletionsDep,
) -> EmbeddingsResponse:
    """OpenAI embeddings; a list of inputs is embedded in batches, known ones from the cache."""
    embedding_request = EmbeddingRequest(body.model, texts_of(body), body.dimensions)
    result, cached = await cancel_on_disconnect(request, completions.embed(embedding_request))
    response.headers["X-Cache"] = "hit" if cached else "miss"
    return EmbeddingsResponse(
        data=[
            EmbeddingItem(index=index, embedding=encode(vector, body.encoding_format))
            for index, vector in enumerate(result.vectors)
        ],
        model=body.model,
        usage=EmbeddingsUsage(prompt_tokens=result.input_tokens, total_tokens=result.input_tokens),
    )
