"""Every router of the service, combined in one place."""

from __future__ import annotations

from fastapi import APIRouter

from .routes import health

api_router = APIRouter()
api_router.include_router(health.router)
