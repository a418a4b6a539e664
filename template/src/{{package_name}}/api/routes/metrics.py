from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ...metrics import render_metrics

router = APIRouter(tags=["health"])


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """Prometheus' scrape target. Not behind authentication: keep it off the public edge
    (the nginx config refuses it); Prometheus scrapes the app directly."""
    return Response(render_metrics(), media_type=CONTENT_TYPE_LATEST)
