"""Routers of your own: include them in `router` below.

This file is yours. The template writes it once and `copier update` never changes it
(`_skip_if_exists`), so what you add here cannot collide with a template update. Keep
the route modules themselves in a package of your own too (for example `features/`
beside `api/`): the template never creates files there.

Everything in `router` is served under /v1 and, like the template's /v1 routes, needs
a principal and counts against its tier's request limit (its OpenAPI schema says what that
may answer: `LIMITED_ROUTE_ERRORS`). For example, with a module
`features/reports.py` that defines `router = APIRouter()`, add
`from ..features import reports` to the imports and
`router.include_router(reports.router)` below.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from .limits import LIMITED_ROUTE_ERRORS, enforce_request_limit

router = APIRouter(
    prefix="/v1", dependencies=[Depends(enforce_request_limit)], responses=LIMITED_ROUTE_ERRORS
)
