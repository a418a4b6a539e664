"""Bad input is a 400 or 422 in the error envelope, naming what is wrong; never a 500."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from httpx2 import AsyncClient

pytestmark = pytest.mark.anyio

USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "fake", "messages": []}, 422, "messages"),
        ({"model": "fake"}, 422, "messages"),
        ({"messages": [USER]}, 422, "model"),
        ({"model": "", "messages": [USER]}, 422, "model"),
        ({"model": "fake", "messages": [{"role": "wizard", "content": "hi"}]}, 422, None),
        ({"model": "fake", "messages": [{"role": "user"}]}, 422, None),
        ({"model": "fake", "messages": "hi"}, 422, "messages"),
        ({"model": "fake", "messages": [USER], "temperature": 2.5}, 422, "temperature"),
        ({"model": "fake", "messages": [USER], "temperature": -1}, 422, "temperature"),
        ({"model": "fake", "messages": [USER], "temperature": "hot"}, 422, "temperature"),
        ({"model": "fake", "messages": [USER], "top_p": 1.5}, 422, "top_p"),
        ({"model": "fake", "messages": [USER], "max_tokens": 0}, 422, "max_tokens"),
        ({"model": "fake", "messages": [USER], "max_tokens": 10**9}, 400, "max_tokens"),
        ({"model": "fake", "messages": [USER], "max_completion_tokens": 10**9}, 400, "max_tokens"),
        ({"model": "fake", "messages": [USER], "n": 2}, 422, "n"),
        ({"model": "fake", "messages": [USER], "stop": ["a", "b", "c", "d", "e"]}, 422, None),
        ({"model": "fake", "messages": [USER], "stream": "yes please"}, 422, "stream"),
        ({"model": "fake", "messages": [USER], "stream": True, "max_tokens": 10**9}, 400, None),
    ],
)
async def test_bad_chat_completion_requests(
    client: AsyncClient, body: dict[str, Any], status: int, param: str | None
) -> None:
    response = await client.post("/v1/chat/completions", json=body)

    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    if param is not None:
        assert error["param"] == param


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"model": "local-embedding", "input": []}, 400, "must not be empty"),
        ({"model": "local-embedding", "input": [""]}, 400, "empty strings"),
        ({"model": "local-embedding", "input": [1, 2, 3]}, 400, "token arrays"),
        ({"model": "local-embedding", "input": [[1, 2], [3]]}, 400, "token arrays"),
        ({"model": "local-embedding", "input": ["x"] * 2049}, 400, "at most 2048"),
        ({"model": "local-embedding", "input": "x", "encoding_format": "hex"}, 422, None),
        ({"model": "local-embedding", "input": {"text": "x"}}, 422, None),
        ({"model": "local-embedding", "input": "x", "dimensions": 0}, 422, None),
        ({"model": "local-embedding", "input": "x", "dimensions": 10**9}, 422, None),
        ({"input": "x"}, 422, None),
    ],
)
async def test_bad_embedding_requests(
    client: AsyncClient, body: dict[str, Any], status: int, message: str | None
) -> None:
    response = await client.post("/v1/embeddings", json=body)

    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    if message is not None:
        assert message in error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"title": "a\x00b"}, "title"),
        ({"system_prompt": "\x00"}, "system_prompt"),
        ({"model": "fake\ud800"}, "model"),
        ({"max_tokens": 2**31}, "max_tokens"),
    ],
)
async def test_what_a_conversation_cannot_keep_is_a_422(
    client: AsyncClient, body: dict[str, Any], param: str
) -> None:
    # Escaped to ASCII, as a lone surrogate can only travel in JSON.
    response = await client.post(
        "/v1/conversations",
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == param


async def test_a_message_with_a_nul_is_a_422(client: AsyncClient) -> None:
    created = await client.post("/v1/conversations", json={})
    conversation_id = created.json()["id"]

    response = await client.post(
        f"/v1/conversations/{conversation_id}/messages", json={"content": "a\x00b"}
    )

    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == "content"


async def test_a_body_that_is_not_json_is_a_422(client: AsyncClient) -> None:
    response = await client.post(
        "/v1/chat/completions", content=b"\xff\xfe", headers={"content-type": "application/json"}
    )

    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request_error"
