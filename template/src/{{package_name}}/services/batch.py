"""The batch jobs: many chat completions, or embeddings of many inputs, for one caller.

Items run a few at a time (`jobs_concurrency`), each charged to the caller like the same
call made over HTTP (its request counted in the jobs' own bucket, its tokens in the caller's
one budget): an item over a limit waits until it is let in (up to
`jobs_rate_limit_max_wait`). Each finished item is saved at once, so an attempt that is
interrupted leaves its finished items for the next attempt, which does only the rest.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from ..errors import APIError
from ..llm.base import EmbeddingRequest
from ..llm.errors import ProviderError
from ..schemas.jobs import ChatCompletionsJob, EmbeddingsJob
from ..schemas.openai import ChatCompletion, ChatCompletionRequest
from .completions import CompletionService
from .jobs import is_transient, job_error

if TYPE_CHECKING:
    from ..resources import Resources
    from ..security.principal import Principal
    from .jobs import JobContext


async def check_chat_completions(
    job: ChatCompletionsJob, resources: Resources, _principal: Principal
) -> None:
    """Refuse, before anything runs, a batch no provider would answer."""
    settings = resources.settings
    _check_size(len(job.requests), settings.jobs_max_items, "requests")
    completions = CompletionService.from_settings(resources.llm, settings)
    for index, body in enumerate(job.requests):
        try:
            completions.check(body.to_chat_request(settings.llm_default_max_tokens))
        except (APIError, ProviderError) as error:
            raise APIError(
                error.status_code,
                f"requests[{index}]: {error.message}",
                code=error.code,
                param=f"requests.{index}",
            ) from error


async def check_embeddings(job: EmbeddingsJob, resources: Resources, _principal: Principal) -> None:
    _check_size(len(job.input), resources.settings.jobs_max_items, "input")
    try:
        resources.llm.for_model(job.model)
    except ProviderError as error:
        raise APIError(error.status_code, error.message, code=error.code, param="model") from error


def _check_size(count: int, limit: int, param: str) -> None:
    if count > limit:
        msg = f"{param} has {count} items; a job may have at most {limit}"
        raise APIError(422, msg, code="too_many_items", param=param)


async def run_chat_completions(context: JobContext) -> dict[str, Any]:
    job = ChatCompletionsJob.model_validate(context.job.input)
    total = len(job.requests)
    done = await context.finished_items()
    completions = context.completions()
    default_max_tokens = context.settings.llm_default_max_tokens

    async def answer(index: int, body: ChatCompletionRequest) -> None:
        request = body.to_chat_request(default_max_tokens)
        try:
            await context.within_limits(context.admit)
            completion, _cached = await context.within_limits(lambda: completions.complete(request))
        except (APIError, ProviderError) as error:
            if is_transient(error, context.resources):
                raise
            failure = job_error(error, context.resources)
            outcome: dict[str, Any] = {"index": index, "error": asdict(failure)}
        else:
            response = ChatCompletion.of(completion, model=body.model)
            outcome = {"index": index, "response": response.model_dump(mode="json")}
        await context.save_item(index, outcome, total=total)

    await context.for_each(
        [(index, body) for index, body in enumerate(job.requests) if index not in done], answer
    )
    items = await context.finished_items()
    return {"object": "list", "data": [items[index] for index in range(total)]}


async def run_embeddings(context: JobContext) -> dict[str, Any]:
    job = EmbeddingsJob.model_validate(context.job.input)
    size = context.settings.embedding_batch_size
    batches = [job.input[start : start + size] for start in range(0, len(job.input), size)]
    done = await context.finished_items()
    completions = context.completions()

    async def embed(index: int, texts: list[str]) -> None:
        request = EmbeddingRequest(job.model, texts, job.dimensions)
        await context.within_limits(context.admit)
        result, _cached = await context.within_limits(lambda: completions.embed(request))
        batch = {"vectors": result.vectors, "tokens": result.input_tokens}
        await context.save_item(index, batch, total=len(batches))

    await context.for_each(
        [(index, texts) for index, texts in enumerate(batches) if index not in done], embed
    )
    items = await context.finished_items()
    vectors = [vector for index in range(len(batches)) for vector in items[index]["vectors"]]
    tokens = sum(items[index]["tokens"] for index in range(len(batches)))
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": vector}
            for index, vector in enumerate(vectors)
        ],
        "model": job.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
