"""OpenTelemetry tracing, off unless an OTLP endpoint is configured.

HTTP requests get server spans from FastAPI's own OpenTelemetry support; every call to an LLM
provider gets a client span named and attributed after the GenAI semantic conventions
(`gen_ai.operation.name`, `gen_ai.request.model`, `gen_ai.usage.input_tokens`, ...), so any
OpenTelemetry backend shows model, latency and token use per call. Prompts and completions
are added only when `otel_capture_content` is on.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from collections.abc import MutableMapping, Sequence

    from fastapi.telemetry import TelemetryConfig
    from opentelemetry.trace import Span

    from .llm.base import ChatRequest, Usage
    from .settings import Settings


def open_tracer_provider(settings: Settings, *, version: str) -> TracerProvider | None:
    """A provider exporting to the configured endpoint, or None when tracing is off."""
    if not settings.otel_exporter_otlp_endpoint:
        return None
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": settings.otel_service_name, "service.version": version}
        )
    )
    endpoint = settings.otel_exporter_otlp_endpoint.rstrip("/")
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(f"{endpoint}/v1/traces")))
    return provider


_UNTRACED_PATHS = frozenset({"/health", "/health/ready", "/metrics"})


def fastapi_telemetry(provider: TracerProvider | None) -> TelemetryConfig:
    """FastAPI's own request spans: to this provider, or none at all."""
    if provider is None:
        return {"tracing": False, "metrics": False, "logs": False}
    return {"tracer_provider": provider, "exclude": _is_probe}


def _is_probe(scope: MutableMapping[str, Any]) -> bool:
    # Probes and scrapes would drown the traces that matter.
    return scope.get("path") in _UNTRACED_PATHS


# `error.type` of a call its caller gave up on.
CANCELLED = "cancelled"


class GenAITracer:
    """Spans for provider calls; without a provider, spans that record nothing."""

    def __init__(self, provider: TracerProvider | None, *, capture_content: bool) -> None:
        self.tracer = trace.get_tracer(
            __name__, tracer_provider=provider or trace.NoOpTracerProvider()
        )
        self.capture_content = capture_content

    def start_chat(self, request: ChatRequest, *, provider: str, streaming: bool) -> Span:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": request.model,
            "gen_ai.request.max_tokens": request.max_tokens,
            "gen_ai.request.stream": streaming,
        }
        if request.temperature is not None:
            attributes["gen_ai.request.temperature"] = request.temperature
        if self.capture_content:
            attributes["gen_ai.input.messages"] = json.dumps(
                [
                    {"role": m.role, "parts": [{"type": "text", "content": m.content}]}
                    for m in request.messages
                ]
            )
        # Not the current span: a stream's span outlives the task step that opened it.
        return self.tracer.start_span(
            f"chat {request.model}", kind=SpanKind.CLIENT, attributes=attributes
        )

    def start_embeddings(self, model: str, *, provider: str, inputs: int) -> Span:
        return self.tracer.start_span(
            f"embeddings {model}",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "embeddings",
                "gen_ai.provider.name": provider,
                "gen_ai.request.model": model,
                "gen_ai.embeddings.input_count": inputs,
            },
        )

    def finish(
        self,
        span: Span,
        usage: Usage | None,
        *,
        finish_reasons: Sequence[str] = (),
        output: str | None = None,
        error: BaseException | None = None,
    ) -> None:
        if usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
        if finish_reasons:
            span.set_attribute("gen_ai.response.finish_reasons", list(finish_reasons))
        if output is not None and self.capture_content:
            span.set_attribute(
                "gen_ai.output.messages",
                json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": output}]}]),
            )
        if isinstance(error, GeneratorExit | asyncio.CancelledError):
            # The caller went away (its stream closed, its request cancelled): one class of
            # outcome whichever way that reached the call, and not the provider's failure.
            span.set_attribute("error.type", CANCELLED)
            span.set_status(Status(StatusCode.ERROR, "the caller went away"))
        elif error is not None:
            span.set_attribute("error.type", type(error).__qualname__)
            span.set_status(Status(StatusCode.ERROR, str(error) or None))
        span.end()
