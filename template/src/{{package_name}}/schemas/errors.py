"""The error envelope every failure is answered with (the OpenAI error object)."""

from __future__ import annotations

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    type: str
    message: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
