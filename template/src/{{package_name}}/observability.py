"""Structured logs and the request-context middleware: an id, an access log line and the
request's metrics for every HTTP request."""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import structlog

from .metrics import REQUESTS_IN_FLIGHT, record_request

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "x-request-id"
# A caller-supplied id is echoed into logs and headers, so only a short, plain one is trusted.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_HANDLER_NAME = "structlog"

logger = structlog.get_logger("access")


class RedactQueryCredentials(logging.Filter):
    """Keep credentials sent in a query string (`?token=`, from clients that cannot set
    headers) out of the logs: uvicorn logs such paths whole."""

    PATTERN = re.compile(r"([?&](?:token|access_token|api_key|key)=)[^&\s\"']+", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.PATTERN.sub(r"\1[redacted]", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def configure_logging(*, level: str, json: bool) -> None:
    """Route structlog and the standard library (uvicorn, libraries) through one renderer."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(RedactQueryCredentials())
    root = logging.getLogger()
    # Replace only our own handler, so repeated calls (one per app) and pytest's caplog coexist.
    root.handlers = [h for h in root.handlers if h.get_name() != _HANDLER_NAME] + [handler]
    root.setLevel(level)
    # The access log below replaces uvicorn's, which has no request id.
    logging.getLogger("uvicorn.access").disabled = True


def request_id_from(scope: Scope) -> str | None:
    """The id the middleware gave this request, for handlers that run outside it."""
    state: dict[str, Any] = scope.get("state", {})
    request_id = state.get("request_id")
    return request_id if isinstance(request_id, str) else None


class RequestContextMiddleware:
    """Give every HTTP request an id (echoed as `X-Request-ID`), write one access log line
    and record its metrics (in flight, duration by route template and status).

    A pure ASGI middleware rather than `BaseHTTPMiddleware`, so streamed responses pass
    through unbuffered and a client disconnect still reaches the endpoint.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = self._incoming_request_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status_code = 500
        started = time.perf_counter()

        async def send_with_request_id(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != REQUEST_ID_HEADER.encode()
                ]
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message["headers"] = headers
            await send(message)

        REQUESTS_IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            REQUESTS_IN_FLIGHT.dec()
            seconds = time.perf_counter() - started
            record_request(scope, status_code, seconds)
            logger.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status_code,
                duration_ms=round(seconds * 1000, 2),
                client=scope["client"][0] if scope.get("client") else None,
            )
            structlog.contextvars.unbind_contextvars("request_id")

    @staticmethod
    def _incoming_request_id(scope: Scope) -> str | None:
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER.encode():
                candidate = value.decode("latin-1")
                return candidate if _VALID_REQUEST_ID.match(candidate) else None
        return None
