"""Requests whose text the service keeps."""

from __future__ import annotations

from pydantic import BaseModel, field_validator


class KeptRequest(BaseModel):
    """No NUL character in any of its text: not every database keeps one, and no caller means
    to send it. (The lone surrogates a JSON string can carry and UTF-8 cannot are refused by
    the length limit each of these fields has.)"""

    @field_validator("*")
    @classmethod
    def _without_nul(cls, value: object) -> object:
        if isinstance(value, str) and "\x00" in value:
            msg = "must not contain a NUL character"
            raise ValueError(msg)
        return value
