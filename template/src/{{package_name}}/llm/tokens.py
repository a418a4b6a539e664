"""Token counting that works offline: an estimate, for before a call.

One token per word of up to four characters, per four-character slice of a longer word and
per punctuation mark (about four characters a token in English). It serves context trimming
and rate-limit reservations; what is charged is the provider's exact usage. The fake
provider tokenizes with it, so for it the count is exact.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .base import ChatMessage

# A word of up to four characters, a four-character slice of a longer word, or one mark.
_TOKEN = re.compile(r"\s*(?:\w{1,4}|[^\w\s])", re.UNICODE)
# OpenAI's chat format adds a few tokens per message and to prime the reply.
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_REPLY = 3


def split_tokens(text: str) -> list[str]:
    """The text as the estimate's tokens, each with the whitespace in front of it."""
    # Without the whitespace at the end, which no token follows: there `\s*` failed from
    # every position of the run, quadratic in its length (200k spaces took minutes).
    return _TOKEN.findall(text.rstrip())


def count_text_tokens(text: str) -> int:
    return len(split_tokens(text))


def count_message_tokens(messages: Iterable[ChatMessage]) -> int:
    return _TOKENS_PER_REPLY + sum(
        _TOKENS_PER_MESSAGE + count_text_tokens(message.content) for message in messages
    )
