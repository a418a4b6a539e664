from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ...schemas.usage import UsageDay, UsageReport
from ...services.usage import usage_totals
from ..deps import ResourcesDep
from ..limits import LIMITED_ROUTE_ERRORS, LimitedPrincipalDep

router = APIRouter(prefix="/usage", tags=["usage"], responses=LIMITED_ROUTE_ERRORS)


@router.get("")
async def read_usage(
    principal: LimitedPrincipalDep,
    resources: ResourcesDep,
    days: Annotated[int, Query(ge=1, le=366)] = 30,
) -> UsageReport:
    """The caller's LLM usage per UTC day and model, over the last `days` days."""
    totals = await usage_totals(resources.usage, principal, days=days)
    return UsageReport(
        data=[
            UsageDay(
                date=total.day,
                model=total.model,
                calls=total.calls,
                input_tokens=total.input_tokens,
                output_tokens=total.output_tokens,
                cost=total.cost,
            )
            for total in totals
        ]
    )
