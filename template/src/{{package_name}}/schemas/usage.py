from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel


class UsageDay(BaseModel):
    date: dt.date
    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost: float


class UsageReport(BaseModel):
    object: Literal["list"] = "list"
    data: list[UsageDay]
