"""What a principal's LLM calls cost, day by day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..security.principal import Principal
    from ..storage.usage import UsageRepository, UsageTotal


async def usage_totals(
    usage: UsageRepository, principal: Principal, *, days: int
) -> list[UsageTotal]:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return await usage.totals(principal.id, since=today - timedelta(days=days - 1))
