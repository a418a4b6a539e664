"""Rate limits at the edge: every call under /v1 is counted, and every response says so."""

from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import error_responses
from ..security.principal import Principal
from ..services.metering import MeteredCompletions, admit_request, metered_completions
from .authentication import PRINCIPAL_ERRORS, PrincipalDep
from .deps import CompletionServiceDep, ResourcesDep

_HEADERS_STATE = "rate_limit_headers"

# What a route behind the request limit may answer before it runs: for want of a principal,
# the limit reached, or the limits not to be checked (Redis not answering). Each router that
# api/router.py includes behind the limit declares these.
LIMITED_ROUTE_ERRORS = {**PRINCIPAL_ERRORS, **error_responses(429, 503)}


async def enforce_request_limit(
    request: Request, principal: PrincipalDep, resources: ResourcesDep
) -> Principal:
    setattr(request.state, _HEADERS_STATE, await admit_request(principal, resources))
    return principal


LimitedPrincipalDep = Annotated[Principal, Depends(enforce_request_limit)]


async def get_metered_completions(
    principal: LimitedPrincipalDep, resources: ResourcesDep, completions: CompletionServiceDep
) -> MeteredCompletions:
    return metered_completions(resources, principal, completions)


MeteredCompletionsDep = Annotated[MeteredCompletions, Depends(get_metered_completions)]


class RateLimitHeadersMiddleware:
    """Add the rate-limit headers a request was admitted with to its response, whatever kind
    of response it is (a model, a stream, or an error raised later)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            state: dict[str, Any] = scope.get("state", {})
            extra: dict[str, str] | None = state.get(_HEADERS_STATE)
            if message["type"] == "http.response.start" and extra:
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *(
                        (name.lower().encode(), value.encode())
                        for name, value in extra.items()
                        if name.lower().encode() not in present
                    ),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)
