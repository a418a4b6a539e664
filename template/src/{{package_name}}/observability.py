"""Structured logs and the request-context middleware: an id, an access log line and the
request's metrics for every HTTP request."""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

import structlog

from .metrics import REQUESTS_IN_FLIGHT, record_request

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "x-request-id"
# A caller-supplied id is echoed into logs and headers, so only a short, plain one is trusted.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_HANDLER_NAME = "structlog"

logger = structlog.get_logger("access")


# Query parameters and fields whose values are credentials, compared by the parameter's name
# once percent-decoded (`?%74oken=` is `?token=` to the server) and in any case.
CREDENTIAL_NAMES = frozenset({"token", "access_token", "api_key", "key", "authorization"})
# A query parameter (or a bare `name=value`): its name and value, up to the next separator.
# Linear: each match starts at `?` or `&` and stops at the next one.
_QUERY_PARAMETER = re.compile(r"(^|[?&])([^?&=\s#\"']{1,256})=([^?&\s#\"']*)")
# A credential in a header as logged: `Authorization: Bearer <token>`.
_SCHEME_CREDENTIAL = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
REDACTED = "[redacted]"


def _redact_parameter(match: re.Match[str]) -> str:
    separator, name, _ = match.groups()
    if unquote_plus(name).lower() in CREDENTIAL_NAMES:
        return f"{separator}{name}={REDACTED}"
    return match.group(0)


def redact(text: str) -> str:
    """`text` with the values of credential query parameters and header credentials hidden."""
    if "=" in text:
        text = _QUERY_PARAMETER.sub(_redact_parameter, text)
    return _SCHEME_CREDENTIAL.sub(rf"\1 {REDACTED}", text)


def _redact_value(name: object, value: Any) -> Any:
    if isinstance(name, str) and unquote_plus(name).lower() in CREDENTIAL_NAMES:
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redact_value(key, item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        items = [_redact_value(None, item) for item in value]
        # A tuple stays one: `exc_info` may be (type, exception, traceback).
        return tuple(items) if isinstance(value, tuple) else items
    return value


def redact_event(
    _logger: Any, _method: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    """structlog processor: credential fields (`token=`, `authorization=`) and credentials
    inside string fields (a URL with `?token=`) are redacted."""
    return {key: _redact_value(key, value) for key, value in event_dict.items()}


class RedactQueryCredentials(logging.Filter):
    """Keep credentials sent in a query string (`?token=`, from clients that cannot set
    headers) out of the logs: uvicorn logs such paths whole."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, dict):
            # structlog's own events, redacted by `redact_event`.
            return True
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


# Loggers that servers give handlers of their own (uvicorn's CLI config, gunicorn's worker),
# so their records may never reach the root handler: each gets the filter itself.
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn.error", "gunicorn.access")


def configure_logging(*, level: str, json: bool) -> None:
    """Route structlog and the standard library (uvicorn, libraries) through one renderer."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_event,
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
                # Again: a traceback may quote a URL with a credential in it.
                redact_event,
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
    for name in SERVER_LOGGERS:
        server_logger = logging.getLogger(name)
        if not any(isinstance(f, RedactQueryCredentials) for f in server_logger.filters):
            server_logger.addFilter(RedactQueryCredentials())
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
