"""A local, deterministic embedder: no network, no model download.

Feature hashing of words and word pairs into a fixed number of signed buckets, L2-normalised.
Common English function words are left out (unless a text has nothing else), and a word
repeated counts sublinearly (1 + log n), so that what a text is about, rather than how it is
phrased, decides its neighbours. Texts that share words get similar vectors, which is enough
for development, tests and a small RAG corpus; it is no substitute for a trained embedding
model in production.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections import Counter

_WORD = re.compile(r"\w+", re.UNICODE)
# Words too common to tell one text from another.
_STOPWORDS = frozenset(
    _WORD.findall(
        """
        a about an and are as at be been but by can could did do does for from had has have
        how i if in into is it its me my of on or our should so than that the their them then
        there these they this to too was we were what when where which who why will with would
        you your
        """
    )
)


class HashingEmbedder:
    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions

    def embed(self, text: str, dimensions: int | None = None) -> list[float]:
        size = dimensions or self.dimensions
        vector = [0.0] * size
        words = [word.lower() for word in _WORD.findall(text)]
        words = [word for word in words if word not in _STOPWORDS] or words
        features = Counter(words + [f"{a} {b}" for a, b in itertools.pairwise(words)])
        for feature, count in features.items():
            digest = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest())
            weight = 1.0 + math.log(count)
            vector[digest % size] += weight if (digest >> 63) & 1 else -weight
        norm = math.sqrt(sum(value * value for value in vector))
        return [value / norm for value in vector] if norm else vector
