"""Exception handlers that turn every failure into the error envelope of `schemas.errors`."""

from __future__ import annotations

import math
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import structlog
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .api.disconnect import ClientDisconnectedError
from .llm.errors import ProviderError
from .observability import REQUEST_ID_HEADER, request_id_from
from .ratelimit import RateLimiterUnavailableError
from .schemas.errors import ErrorDetail, ErrorResponse

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from fastapi import FastAPI, Request

logger = structlog.get_logger(__name__)

# The `type` values of OpenAI's error object, so its SDKs raise the matching exception class.
_ERROR_TYPES: Mapping[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class APIError(Exception):
    """An error a service or route raises on purpose, answered as it says."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.code = code
        self.param = param
        self.headers = dict(headers or {})


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of errors a route answers with, each in the error envelope."""
    return {
        code: {"model": ErrorResponse, "description": HTTPStatus(code).phrase}
        for code in status_codes
    }


def error_type_for(status_code: int) -> str:
    if status_code >= 500:
        return "server_error"
    return _ERROR_TYPES.get(status_code, "invalid_request_error")


def error_body(
    status_code: int, message: str, *, code: str | None = None, param: str | None = None
) -> ErrorResponse:
    return ErrorResponse(
        error=ErrorDetail(type=error_type_for(status_code), message=message, code=code, param=param)
    )


def error_response(
    status_code: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = error_body(status_code, message, code=code, param=param)
    return JSONResponse(
        body.model_dump(mode="json"), status_code=status_code, headers=dict(headers or {})
    )


def validation_error_body(errors: Sequence[Mapping[str, Any]], *, skip: int = 0) -> ErrorResponse:
    """The 422 envelope for pydantic's errors: each as `field: problem`, the first as `param`.

    The first `skip` parts of a location say where the field was, not which it is (FastAPI
    puts "body", "query", ... first); a location that is nothing else is kept whole.
    """
    fields = [".".join(map(str, e["loc"][skip:])) or ".".join(map(str, e["loc"])) for e in errors]
    messages = [
        f"{field}: {e['msg']}" if field else e["msg"]
        for field, e in zip(fields, errors, strict=True)
    ]
    return error_body(
        422,
        "; ".join(messages) or "Invalid request",
        code="validation_error",
        param=fields[0] if fields and fields[0] else None,
    )


async def handle_api_error(_request: Request, exc: APIError) -> JSONResponse:
    return error_response(
        exc.status_code, exc.message, code=exc.code, param=exc.param, headers=exc.headers
    )


async def handle_http_exception(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    # A body over MAX_REQUEST_BYTES (api/body_limit.py): coded as nginx's refusal of one is.
    code = "request_too_large" if exc.status_code == 413 else None
    return error_response(exc.status_code, message, code=code, headers=exc.headers)


async def handle_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    body = validation_error_body(exc.errors(), skip=1)
    return JSONResponse(body.model_dump(mode="json"), status_code=422)


async def handle_provider_error(_request: Request, exc: ProviderError) -> JSONResponse:
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(math.ceil(exc.retry_after))
    logger.warning("provider_error", status=exc.status_code, error=exc.message)
    return error_response(exc.status_code, exc.message, code=exc.code, headers=headers)


async def handle_rate_limiter_unavailable(
    _request: Request, exc: RateLimiterUnavailableError
) -> JSONResponse:
    logger.error("rate_limiter_unavailable", error=str(exc))
    msg = "Rate limits cannot be checked right now; try again shortly"
    return error_response(503, msg, code="rate_limiter_unavailable", headers={"Retry-After": "1"})


async def handle_redis_unavailable(_request: Request, exc: RedisError) -> JSONResponse:
    # What lives in Redis (jobs, the cache, limits failing open) cannot be read or written.
    logger.error("redis_unavailable", error=str(exc))
    msg = "A server the service needs is not answering; try again shortly"
    return error_response(503, msg, code="service_unavailable", headers={"Retry-After": "1"})


async def handle_client_disconnected(_request: Request, _exc: ClientDisconnectedError) -> Response:
    # Nobody reads this answer; 499 (nginx's "client closed request") marks it in the logs.
    return Response(status_code=499)


def database_unavailable() -> APIError:
    msg = "The database cannot be reached right now; nothing was changed, try again shortly"
    return APIError(503, msg, code="database_unavailable", headers={"Retry-After": "1"})


async def handle_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # Any repository may be the one that finds the database gone: the backend tells whether
    # the error says so, and the transaction it interrupted was rolled back.
    resources = getattr(request.app.state, "resources", None)
    if resources is not None and resources.database.is_unavailable(exc):
        logger.error("database_unavailable", error=repr(exc))
        return await handle_api_error(request, database_unavailable())
    # Runs outside the request-context middleware, so the request id is added here.
    request_id = request_id_from(request.scope)
    logger.error("unhandled_exception", request_id=request_id, exc_info=exc)
    return error_response(
        500,
        "The server failed to handle this request; it has been logged"
        + (f" as {request_id}" if request_id else ""),
        headers={REQUEST_ID_HEADER: request_id} if request_id else None,
    )


def document_request_errors(app: FastAPI) -> None:
    """The OpenAPI schema, saying how FastAPI's own checks of a request are answered: a 422
    in the error envelope (FastAPI documents a body of its own, which is never sent), and a
    400 for a body that cannot even be parsed and a 413 for one over MAX_REQUEST_BYTES
    (which it does not document)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        schema = build()
        if fresh:
            _document_request_errors(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's way to change its schema


def _document_request_errors(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    envelope = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in envelope.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components.setdefault(ErrorResponse.__name__, envelope)
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                responses["422"]["content"] = content
            if "requestBody" in operation:
                responses.setdefault("400", {"description": "Bad Request", "content": content})
                responses.setdefault(
                    "413", {"description": "Content Too Large", "content": content}
                )
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)


def install_error_handlers(app: FastAPI) -> None:
    app.exception_handler(APIError)(handle_api_error)
    app.exception_handler(StarletteHTTPException)(handle_http_exception)
    app.exception_handler(RequestValidationError)(handle_validation_error)
    app.exception_handler(ProviderError)(handle_provider_error)
    app.exception_handler(ClientDisconnectedError)(handle_client_disconnected)
    app.exception_handler(RateLimiterUnavailableError)(handle_rate_limiter_unavailable)
    app.exception_handler(RedisConnectionError)(handle_redis_unavailable)
    app.exception_handler(RedisTimeoutError)(handle_redis_unavailable)
    # Starlette hands `Exception` to its outermost middleware: the last word on any failure.
    app.exception_handler(Exception)(handle_unexpected_error)
    document_request_errors(app)
