"""Storage records as the API shows them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..schemas.conversations import ConversationOut, MessageOut, TurnResult, TurnUsage

if TYPE_CHECKING:
    from ..llm.base import Usage
    from ..services.chat import TurnEnd
    from ..storage.conversations import Conversation, Message


def conversation_out(conversation: Conversation) -> ConversationOut:
    return ConversationOut(
        id=conversation.id,
        title=conversation.title,
        model=conversation.model,
        system_prompt=conversation.system_prompt,
        temperature=conversation.temperature,
        max_tokens=conversation.max_tokens,
        created_at=conversation.created_at,
        updated_at=conversation.updated_at,
    )


def message_out(message: Message) -> MessageOut:
    return MessageOut(
        id=message.id,
        role=message.role,
        content=message.content,
        status=message.status,
        input_tokens=message.input_tokens,
        output_tokens=message.output_tokens,
        latency_ms=message.latency_ms,
        created_at=message.created_at,
    )


def turn_usage(usage: Usage) -> TurnUsage:
    return TurnUsage(
        prompt_tokens=usage.input_tokens,
        completion_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
    )


def turn_result(end: TurnEnd) -> TurnResult:
    return TurnResult(
        user_message=message_out(end.user_message),
        assistant_message=message_out(end.assistant_message),
        usage=turn_usage(end.usage),
    )
