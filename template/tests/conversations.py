"""Conversation helpers shared by the test modules."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx2


async def new_conversation(client: httpx2.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await client.post("/v1/conversations", json=fields)
    assert response.status_code == 201, response.text
    conversation: dict[str, Any] = response.json()
    return conversation


async def messages_of(client: httpx2.AsyncClient, conversation_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/conversations/{conversation_id}/messages")
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["data"]
    return messages
