"""Indexes per collection, created (idempotently) when the app starts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pymongo import IndexModel
    from pymongo.asynchronous.database import AsyncDatabase

# Each feature's repository adds its collection here. Unique indexes are what keeps the
# invariants a relational schema would keep with constraints.
INDEXES: Mapping[str, Sequence[IndexModel]] = {}


async def ensure_indexes(
    db: AsyncDatabase[dict[str, Any]], indexes: Mapping[str, Sequence[IndexModel]]
) -> None:
    for collection, models in indexes.items():
        if models:
            await db[collection].create_indexes(list(models))
