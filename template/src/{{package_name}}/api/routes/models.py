from __future__ import annotations

from fastapi import APIRouter

from ...errors import error_responses
from ...llm.errors import ModelNotFoundError
from ...schemas.openai import Model, ModelList
from ..deps import CompletionServiceDep
from ..limits import LIMITED_ROUTE_ERRORS

router = APIRouter(prefix="/models", tags=["openai"], responses=LIMITED_ROUTE_ERRORS)


@router.get("")
async def list_models(service: CompletionServiceDep) -> ModelList:
    """The models this service serves: the fake's own, then the configured provider's."""
    models = await service.list_models()
    return ModelList(data=[Model(id=m.id, created=m.created, owned_by=m.owned_by) for m in models])


@router.get("/{model_id:path}", responses=error_responses(404))
async def retrieve_model(model_id: str, service: CompletionServiceDep) -> Model:
    for model in await service.list_models():
        if model.id == model_id:
            return Model(id=model.id, created=model.created, owned_by=model.owned_by)
    msg = f"The model {model_id!r} does not exist"
    raise ModelNotFoundError(msg)
