"""The cap on request bodies (MAX_REQUEST_BYTES), counted as the bytes arrive.

Past the cap, the route's read of the body raises `BodyTooLargeError`, a 413 the error
handlers answer in the envelope like any other error: at the first read when the declared
Content-Length is over it, else at the first chunk past it, so a chunked body cannot slip
by. Nothing past the cap is kept; a route that reads no body is never refused for one.
FastAPI's own `max_body_size` counts the same way, but answers a declared length over the
cap with Starlette's plain-text 413 in place of whatever response the app sends, so the
envelope could not be.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.exceptions import HTTPException

if TYPE_CHECKING:
    from fastapi import Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Where the cap of the request in flight is, in the ASGI scope; a route may raise it.
_LIMIT = "max_request_bytes"


class BodyTooLargeError(HTTPException):
    # An HTTPException: FastAPI passes those on from reading the body, other errors it
    # turns into a 400.
    def __init__(self) -> None:
        # The connection is kept: the server reads the rest of the body and drops it, so a
        # client still sending gets this answer. Closed at once, the unread bytes would make
        # the socket send a reset, which a client can read before the 413.
        super().__init__(413, "The request body is too large")


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[_LIMIT] = self.max_bytes
        declared = _declared_length(scope)
        received = 0

        async def receive_counted() -> Message:
            nonlocal received
            limit: int | None = scope[_LIMIT]
            if limit is not None and declared is not None and declared > limit:
                raise BodyTooLargeError
            message = await receive()
            if limit is not None and message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError
            return message

        await self.app(scope, receive_counted, send)


def counted_by_the_route(request: Request) -> None:
    """Leave this request's body uncapped here: for a route that holds the body to a cap of
    its own as it reads it, and answers in its own words (document uploads)."""
    request.scope[_LIMIT] = None


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses those before the app sees them
    return None
