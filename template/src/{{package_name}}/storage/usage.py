"""Usage records: what each LLM call cost, per principal and model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .ids import new_id

if TYPE_CHECKING:
    from collections.abc import Sequence
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
    # Given when the record is made, so that writing it again (a retry after a lost reply)
    # adds nothing: a record is counted once.
    id: str = field(default_factory=new_id)


@dataclass(frozen=True, slots=True)
class UsageTotal:
    day: date
    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost: float


class UsageRepository(Protocol):
    async def record_many(self, records: Sequence[UsageRecord]) -> None:
        """Write them all, or raise; a record already written (same id) is skipped."""
        ...

    async def totals(self, principal_id: str, *, since: datetime) -> list[UsageTotal]:
        """Sums per UTC day and model, oldest day first."""
        ...
