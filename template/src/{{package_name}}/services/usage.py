"""What a principal's LLM calls cost, day by day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..security.principal import Principal
    from ..storage.usage import UsageTotal
    from ..storage.usage_writer import UsageWriter


async def usage_totals(usage: UsageWriter, principal: Principal, *, days: int) -> list[UsageTotal]:
    # The records of calls that have just ended may still be on their way to the database.
    await usage.flush()
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return await usage.repository.totals(principal.id, since=today - timedelta(days=days - 1))
