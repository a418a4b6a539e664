"""Every router of the service, combined in one place."""

from __future__ import annotations

from fastapi import APIRouter

from .routes import chat, embeddings, health, models

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(models.router, prefix="/v1")
api_router.include_router(chat.router, prefix="/v1")
api_router.include_router(embeddings.router, prefix="/v1")
