"""Usage records: what each LLM call cost, per principal and model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from datetime import date, datetime


@dataclass(frozen=True, slots=True)
class UsageRecord:
    principal_id: str
    model: str
    input_tokens: int
    output_tokens: int
    latency_ms: float
    cost: float
    # "complete", or "interrupted" when the caller went away mid-stream (still charged).
    status: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class UsageTotal:
    day: date
    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost: float


class UsageRepository(Protocol):
    async def record(self, record: UsageRecord) -> None: ...

    async def totals(self, principal_id: str, *, since: datetime) -> list[UsageTotal]:
        """Sums per UTC day and model, oldest day first."""
        ...
