"""Stop work for a caller who has gone away."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from fastapi import Request

T = TypeVar("T")


class ClientDisconnectedError(Exception):
    """The caller closed the connection before the answer was ready."""


async def _disconnected(request: Request) -> None:
    # The body has been read by now, so the next message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def cancel_on_disconnect(request: Request, awaitable: Awaitable[T]) -> T:
    """Await `awaitable`, cancelling it (and its provider call) if the client disconnects.

    Starlette keeps running a plain endpoint after its client left; for an LLM call that
    would mean paying for tokens nobody reads.
    """
    work = asyncio.ensure_future(awaitable)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not work.done():
            work.cancel()
        await asyncio.gather(work, watcher, return_exceptions=True)
    if work.cancelled():
        raise ClientDisconnectedError
    return work.result()
