"""Answers served again from Redis: deterministic completions and embeddings.

Only what a provider would answer the same way twice is cached: a non-streamed completion at
temperature 0, and an embedding of the same text by the same model. Every entry is its
owner's: the key is the owner (in a hash tag) and a hash of the model and the canonical JSON
of the input, so that a hit never tells a caller what another one sent or uploaded. A cache
that cannot be reached is a miss, never an error: it only ever saves work.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import structlog
from redis.exceptions import RedisError

from .llm.base import ChatRequest, Completion, Usage

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = structlog.get_logger(__name__)


def is_cacheable(request: ChatRequest) -> bool:
    return request.temperature == 0


class ResponseCache:
    def __init__(self, redis: Redis, *, namespace: str, ttl_seconds: int) -> None:
        self.redis = redis
        self.namespace = namespace
        self.ttl_seconds = ttl_seconds

    def _key(self, owner: str, kind: str, payload: Any) -> str:
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        # The owner's entries share a Redis Cluster slot, so one MGET reads a batch of them.
        return f"{self.namespace}:" + "{" + owner + "}" + f":{kind}:{digest}"

    def _completion_key(self, owner: str, request: ChatRequest) -> str:
        return self._key(owner, "completion", asdict(request))

    def _embedding_key(self, owner: str, model: str, dimensions: int | None, text: str) -> str:
        return self._key(owner, "embedding", [model, dimensions, text])

    async def get_completion(self, owner: str, request: ChatRequest) -> Completion | None:
        raw = await self._get_many([self._completion_key(owner, request)])
        if raw[0] is None:
            return None
        data = json.loads(raw[0])
        return Completion(data["content"], data["finish_reason"], Usage(**data["usage"]))

    async def put_completion(
        self, owner: str, request: ChatRequest, completion: Completion
    ) -> None:
        await self._put_many({self._completion_key(owner, request): json.dumps(asdict(completion))})

    async def get_embeddings(
        self, owner: str, model: str, dimensions: int | None, texts: list[str]
    ) -> list[list[float] | None]:
        raw = await self._get_many(
            [self._embedding_key(owner, model, dimensions, text) for text in texts]
        )
        return [json.loads(value) if value is not None else None for value in raw]

    async def put_embeddings(
        self, owner: str, model: str, dimensions: int | None, vectors: dict[str, list[float]]
    ) -> None:
        await self._put_many(
            {
                self._embedding_key(owner, model, dimensions, text): json.dumps(vector)
                for text, vector in vectors.items()
            }
        )

    async def _get_many(self, keys: list[str]) -> list[bytes | str | None]:
        if self.ttl_seconds == 0:
            return [None] * len(keys)
        try:
            values: list[bytes | str | None] = await self.redis.mget(keys)
        except RedisError as error:
            logger.warning("cache_unavailable", error=str(error))
            return [None] * len(keys)
        return values

    async def _put_many(self, items: dict[str, str]) -> None:
        if self.ttl_seconds == 0 or not items:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipeline:
                for key, value in items.items():
                    pipeline.set(key, value, ex=self.ttl_seconds)
                await pipeline.execute()
        except RedisError as error:
            logger.warning("cache_unavailable", error=str(error))
