from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from ...errors import error_responses
from ...llm.errors import PROVIDER_ERROR_STATUSES
from ...schemas.conversations import (
    ConversationCreate,
    ConversationOut,
    ConversationPage,
    ConversationPatch,
    MessageCreate,
    MessagePage,
    TurnResult,
)
from ...services.chat import ChatService, TurnEnd, TurnEvent
from ...services.conversations import ConversationService
from ...storage.conversations import ConversationChanges
from ..conversation_views import conversation_out, message_out, turn_result
from ..deps import ResourcesDep
from ..disconnect import cancel_on_disconnect
from ..limits import LIMITED_ROUTE_ERRORS, LimitedPrincipalDep, MeteredCompletionsDep
from ..turn_stream import STREAMED_TURN_RESPONSES, streamed_turn

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

router = APIRouter(prefix="/conversations", tags=["conversations"], responses=LIMITED_ROUTE_ERRORS)


async def get_conversation_service(
    principal: LimitedPrincipalDep, resources: ResourcesDep
) -> ConversationService:
    return ConversationService(resources.database.conversations, principal)


ConversationServiceDep = Annotated[ConversationService, Depends(get_conversation_service)]


async def get_chat_service(
    conversations: ConversationServiceDep,
    completions: MeteredCompletionsDep,
    resources: ResourcesDep,
) -> ChatService:
    settings = resources.settings
    return ChatService(
        conversations,
        completions,
        context_budget=settings.context_token_budget,
        default_max_tokens=settings.llm_default_max_tokens,
    )


ChatServiceDep = Annotated[ChatService, Depends(get_chat_service)]


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_conversation(
    body: ConversationCreate, service: ConversationServiceDep, resources: ResourcesDep
) -> ConversationOut:
    conversation = await service.create(
        title=body.title,
        model=body.model or resources.settings.default_chat_model,
        system_prompt=body.system_prompt,
        temperature=body.temperature,
        max_tokens=body.max_tokens,
    )
    return conversation_out(conversation)


@router.get("")
async def list_conversations(
    service: ConversationServiceDep,
    before: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ConversationPage:
    """The caller's conversations, newest first."""
    conversations = await service.page(before=before, limit=limit)
    return ConversationPage(
        data=[conversation_out(c) for c in conversations],
        next_cursor=conversations[-1].id if len(conversations) == limit else None,
    )


@router.get("/{conversation_id}", responses=error_responses(404))
async def read_conversation(
    conversation_id: str, service: ConversationServiceDep
) -> ConversationOut:
    return conversation_out(await service.get(conversation_id))


@router.patch("/{conversation_id}", responses=error_responses(404))
async def update_conversation(
    conversation_id: str, body: ConversationPatch, service: ConversationServiceDep
) -> ConversationOut:
    changes = ConversationChanges(**body.model_dump(exclude_unset=True))
    return conversation_out(await service.update(conversation_id, changes))


@router.delete(
    "/{conversation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(404),
)
async def delete_conversation(conversation_id: str, service: ConversationServiceDep) -> Response:
    await service.delete(conversation_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{conversation_id}/messages", responses=error_responses(404))
async def list_messages(
    conversation_id: str,
    service: ConversationServiceDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> MessagePage:
    """The conversation's messages, oldest first."""
    messages = await service.messages(conversation_id, after=after, limit=limit)
    return MessagePage(
        data=[message_out(m) for m in messages],
        next_cursor=messages[-1].id if len(messages) == limit else None,
    )


@router.post(
    "/{conversation_id}/messages",
    response_model=TurnResult,
    responses={**STREAMED_TURN_RESPONSES, **error_responses(*PROVIDER_ERROR_STATUSES)},
)
async def post_message(
    conversation_id: str,
    body: MessageCreate,
    request: Request,
    chat: ChatServiceDep,
    resources: ResourcesDep,
) -> TurnResult | Response:
    """Add a user message and answer it; `stream: true` streams the answer as Server-Sent
    Events where the service offers them (see `api/turn_stream.py`)."""
    if body.stream:
        return await streamed_turn(request, chat, conversation_id, body.content, resources)
    turn = await cancel_on_disconnect(request, chat.start_turn(conversation_id, body.content))
    end = await cancel_on_disconnect(request, last_event(turn.events))
    if end.error is not None:
        raise end.error
    return turn_result(end)


async def last_event(events: AsyncGenerator[TurnEvent, None]) -> TurnEnd:
    async for event in events:
        if isinstance(event, TurnEnd):
            return event
    msg = "a turn always ends with TurnEnd"
    raise RuntimeError(msg)
