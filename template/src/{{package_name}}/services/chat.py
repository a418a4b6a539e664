"""One turn of a conversation, the same for every transport.

Build the context (the system prompt always, then the newest messages that fit the token
budget), stream the answer, and save the question with its answer exactly once, together:
complete, `error` when the provider failed mid-answer, or `interrupted` when the caller went
away. That save happens under a shield, so the cancellation that ends the stream cannot skip
it; and it is one write, so a database that fails during the turn leaves no question without
its answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import anyio
import structlog

from ..errors import APIError
from ..llm.base import ChatMessage, ChatRequest, TextDelta, Usage
from ..llm.errors import ProviderError
from ..llm.tokens import count_message_tokens, count_text_tokens
from ..storage.clock import now
from ..storage.conversations import Message
from ..storage.ids import new_id

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Sequence

    from ..llm.base import StreamEvent
    from ..storage.conversations import Conversation, MessageStatus
    from .conversations import ConversationService
    from .metering import MeteredCompletions

logger = structlog.get_logger(__name__)

# How many of the newest messages a turn considers before trimming them to the budget.
_HISTORY_WINDOW = 200


@dataclass(frozen=True, slots=True)
class TurnToken:
    text: str


@dataclass(frozen=True, slots=True)
class TurnEnd:
    """The last event: both saved messages, and the provider's failure if there was one."""

    user_message: Message
    assistant_message: Message
    usage: Usage
    error: ProviderError | None = None


TurnEvent = TurnToken | TurnEnd


class Turn:
    """A started turn: the user's message (saved with the answer), then the answer's events.

    The events end with `TurnEnd`, or raise `APIError` (503) when the turn could not be saved.
    """

    def __init__(self, user_message: Message) -> None:
        self.user_message = user_message
        # Set as soon as the turn is saved, however it ended: a transport that cancelled the
        # events reads the interrupted message here.
        self.assistant_message: Message | None = None
        self.events: AsyncGenerator[TurnEvent, None]


def build_context(
    system_prompt: str | None, history: Sequence[Message], budget: int
) -> list[ChatMessage]:
    """The system prompt, then as many of the newest messages as fit in `budget` tokens.

    The newest message (the user's question) is always sent, even alone over budget: the
    provider, not this trimming, decides whether it is too long.
    """
    system = [ChatMessage("system", system_prompt)] if system_prompt else []
    used = count_message_tokens(system)
    kept: list[ChatMessage] = []
    for message in reversed(history):
        if not message.content:
            continue
        candidate = ChatMessage(message.role, message.content)
        cost = count_message_tokens([candidate]) - count_message_tokens([])
        if kept and used + cost > budget:
            break
        kept.append(candidate)
        used += cost
    return [*system, *reversed(kept)]


class ChatService:
    def __init__(
        self,
        conversations: ConversationService,
        completions: MeteredCompletions,
        *,
        context_budget: int,
        default_max_tokens: int,
    ) -> None:
        self.conversations = conversations
        self.repository = conversations.repository
        self.completions = completions
        self.context_budget = context_budget
        self.default_max_tokens = default_max_tokens

    async def start_turn(self, conversation_id: str, content: str) -> Turn:
        """Check and reserve everything first, so a refusal (404, 429) saves nothing."""
        conversation = await self.conversations.get(conversation_id)
        history = await self.repository.recent_messages(conversation.id, limit=_HISTORY_WINDOW)
        user = Message(
            id=new_id(),
            conversation_id=conversation.id,
            role="user",
            content=content,
            status="complete",
            created_at=now(),
        )
        request = ChatRequest(
            model=conversation.model,
            messages=build_context(
                conversation.system_prompt, [*history, user], self.context_budget
            ),
            max_tokens=conversation.max_tokens or self.default_max_tokens,
            temperature=conversation.temperature,
        )
        events = await self.completions.open_stream(request)
        turn = Turn(user)
        run = self._run(conversation, turn, request, events)
        try:
            # Run it to its first `yield`, inside the `try` whose `finally` saves the turn:
            # from here on, closing the events at any point saves it.
            await anext(run)
        except BaseException:
            await events.aclose()
            raise
        # The one `None` came first, and was taken above.
        turn.events = cast("AsyncGenerator[TurnEvent, None]", run)
        return turn

    async def _run(
        self,
        conversation: Conversation,
        turn: Turn,
        request: ChatRequest,
        events: AsyncGenerator[StreamEvent, None],
    ) -> AsyncGenerator[TurnEvent | None, None]:
        started = time.perf_counter()
        pieces: list[str] = []
        usage: Usage | None = None
        failure: ProviderError | None = None
        saved: Message | None = None
        broken = False
        try:
            yield None
            try:
                async for event in events:
                    if isinstance(event, TextDelta):
                        pieces.append(event.text)
                        yield TurnToken(event.text)
                    else:
                        usage = event.usage
            except ProviderError as error:
                failure = error
            status: MessageStatus = "error" if failure else "complete"
            saved = await self._save(turn, conversation, request, pieces, usage, status, started)
        except Exception as error:
            # Not the provider (that is `error`): the database, most likely, which the usage
            # record and the save both need. Nothing of the turn is kept, and the caller is
            # told so, rather than left with a question the history would not show.
            broken = True
            logger.exception("turn_not_saved", conversation_id=conversation.id)
            msg = "This turn could not be saved, so it was not kept; send the message again"
            raise APIError(503, msg, code="turn_not_saved", headers={"Retry-After": "1"}) from error
        finally:
            if saved is None and not broken:
                # The caller went away (a cancellation, which `except Exception` lets through).
                with anyio.CancelScope(shield=True):
                    try:
                        await self._save(
                            turn, conversation, request, pieces, usage, "interrupted", started
                        )
                    except Exception:
                        logger.exception("turn_not_saved", conversation_id=conversation.id)
            await events.aclose()
        yield TurnEnd(turn.user_message, saved, usage_of(saved), failure)

    async def _save(
        self,
        turn: Turn,
        conversation: Conversation,
        request: ChatRequest,
        pieces: list[str],
        usage: Usage | None,
        status: MessageStatus,
        started: float,
    ) -> Message:
        content = "".join(pieces)
        usage = usage or Usage(count_message_tokens(request.messages), count_text_tokens(content))
        message = Message(
            id=new_id(),
            conversation_id=conversation.id,
            role="assistant",
            content=content,
            status=status,
            created_at=now(),
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            latency_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        await self.repository.add_turn(turn.user_message, message)
        turn.assistant_message = message
        return message


def usage_of(message: Message) -> Usage:
    return Usage(message.input_tokens, message.output_tokens)
