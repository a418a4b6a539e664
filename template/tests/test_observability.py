from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from httpx2 import AsyncClient

pytestmark = pytest.mark.anyio


def access_log_entries(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        record.msg
        for record in caplog.records
        if record.name == "access" and isinstance(record.msg, dict)
    ]


async def test_every_response_carries_a_request_id(client: AsyncClient) -> None:
    first = await client.get("/health")
    second = await client.get("/health")

    assert first.headers["x-request-id"]
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_a_well_formed_incoming_request_id_is_kept(client: AsyncClient) -> None:
    response = await client.get("/health", headers={"x-request-id": "edge-7f3a:42"})

    assert response.headers["x-request-id"] == "edge-7f3a:42"


@pytest.mark.parametrize("incoming", ["x" * 129, "has space", "new\\nline", "<script>"])
async def test_a_malformed_incoming_request_id_is_replaced(
    client: AsyncClient, incoming: str
) -> None:
    response = await client.get("/health", headers={"x-request-id": incoming})

    assert response.headers["x-request-id"] != incoming
    assert len(response.headers["x-request-id"]) == 32


async def test_each_request_writes_one_access_log_entry_with_its_id(
    client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="access")

    response = await client.get("/health", headers={"x-request-id": "trace-me"})

    entries = [e for e in access_log_entries(caplog) if e.get("request_id") == "trace-me"]
    assert len(entries) == 1
    assert entries[0]["method"] == "GET"
    assert entries[0]["path"] == "/health"
    assert entries[0]["status"] == response.status_code
    assert entries[0]["duration_ms"] >= 0
