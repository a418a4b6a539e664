"""A local, deterministic embedder: no network, no model download.

Feature hashing of words and word pairs into a fixed number of signed buckets, L2-normalised.
Texts that share words get similar vectors, which is enough for development, tests and a
small RAG corpus; it is no substitute for a trained embedding model in production.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re

_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder:
    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions

    def embed(self, text: str, dimensions: int | None = None) -> list[float]:
        size = dimensions or self.dimensions
        vector = [0.0] * size
        words = [word.lower() for word in _WORD.findall(text)]
        features = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
        for feature in features:
            digest = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest())
            vector[digest % size] += 1.0 if (digest >> 63) & 1 else -1.0
        norm = math.sqrt(sum(value * value for value in vector))
        return [value / norm for value in vector] if norm else vector
