"""Requests whose text the service keeps or passes on."""

from __future__ import annotations

import re

from pydantic import BaseModel, field_validator

# A JSON string may escape half a UTF-16 pair ("\ud800"); no UTF-8 can carry it, so text
# holding one fails wherever it is encoded (a cache key, a database, a provider's request).
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _refuse_lone_surrogates(value: object) -> None:
    if isinstance(value, str):
        if not value.isascii() and _LONE_SURROGATE.search(value):
            msg = "must be text: it holds a lone surrogate (\\ud800 to \\udfff)"
            raise ValueError(msg)
    elif isinstance(value, list | tuple):
        for item in value:
            _refuse_lone_surrogates(item)


class TextRequest(BaseModel):
    """Only well-formed text in any of its strings (and lists of them): a lone surrogate is
    a 422 naming the field, not a 500 where the text is first encoded."""

    @field_validator("*")
    @classmethod
    def _without_lone_surrogates(cls, value: object) -> object:
        _refuse_lone_surrogates(value)
        return value


class KeptRequest(TextRequest):
    """No NUL character in any of its text either: not every database keeps one, and no
    caller means to send it."""

    @field_validator("*")
    @classmethod
    def _without_nul(cls, value: object) -> object:
        if isinstance(value, str) and "\x00" in value:
            msg = "must not contain a NUL character"
            raise ValueError(msg)
        return value
