"""Conversations of one principal: create, read, change, delete, and their history."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import APIError
from ..storage.clock import now
from ..storage.conversations import Conversation
from ..storage.ids import is_id, new_id

if TYPE_CHECKING:
    from ..security.principal import Principal
    from ..storage.conversations import ConversationChanges, ConversationRepository, Message


def not_found() -> APIError:
    # The same answer whether it does not exist or is someone else's: nothing is confirmed.
    return APIError(404, "No such conversation", code="not_found")


def checked_cursor(cursor: str | None, param: str) -> str | None:
    if cursor is not None and not is_id(cursor):
        msg = f"`{param}` must be a cursor this API returned (a message or conversation id)"
        raise APIError(422, msg, code="invalid_cursor", param=param)
    return cursor


class ConversationService:
    def __init__(self, repository: ConversationRepository, principal: Principal) -> None:
        self.repository = repository
        self.owner_id = principal.id

    async def create(
        self,
        *,
        title: str,
        model: str,
        system_prompt: str | None,
        temperature: float | None,
        max_tokens: int | None,
    ) -> Conversation:
        created = now()
        conversation = Conversation(
            id=new_id(),
            owner_id=self.owner_id,
            title=title,
            model=model,
            system_prompt=system_prompt,
            temperature=temperature,
            max_tokens=max_tokens,
            created_at=created,
            updated_at=created,
        )
        await self.repository.create(conversation)
        return conversation

    async def get(self, conversation_id: str) -> Conversation:
        if not is_id(conversation_id):
            raise not_found()
        conversation = await self.repository.get(conversation_id, owner_id=self.owner_id)
        if conversation is None:
            raise not_found()
        return conversation

    async def page(self, *, before: str | None, limit: int) -> list[Conversation]:
        return await self.repository.list_for_owner(
            owner_id=self.owner_id, before=checked_cursor(before, "before"), limit=limit
        )

    async def update(self, conversation_id: str, changes: ConversationChanges) -> Conversation:
        if not is_id(conversation_id):
            raise not_found()
        updated = await self.repository.update(
            conversation_id, owner_id=self.owner_id, changes=changes
        )
        if updated is None:
            raise not_found()
        return updated

    async def delete(self, conversation_id: str) -> None:
        if not is_id(conversation_id):
            raise not_found()
        if not await self.repository.delete(conversation_id, owner_id=self.owner_id):
            raise not_found()

    async def messages(
        self, conversation_id: str, *, after: str | None, limit: int
    ) -> list[Message]:
        await self.get(conversation_id)
        return await self.repository.messages(
            conversation_id, after=checked_cursor(after, "after"), limit=limit
        )
