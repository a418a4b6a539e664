"""Prometheus metrics, served at `GET /metrics`.

Labels stay bounded whatever callers send: routes are their templates (`/v1/jobs/{job_id}`),
unknown paths and methods share one value, and models are counted only once a provider
answered for them. With several worker processes (gunicorn), every process writes its
samples to `PROMETHEUS_MULTIPROC_DIR` (gunicorn.conf.py sets it), and a scrape answered by
any of them adds up all of them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

if TYPE_CHECKING:
    from starlette.types import Scope

REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from a request's arrival to the end of its response (a stream's last byte)",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
REQUESTS_IN_FLIGHT = Gauge(
    "http_requests_in_flight",
    "Requests being answered now, streams included",
    multiprocess_mode="livesum",
)
LLM_TIME_TO_FIRST_TOKEN = Histogram(
    "llm_time_to_first_token_seconds",
    "Time from sending a streamed call to the provider to its first token",
    ["model"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30),
)
LLM_TOKENS = Counter(
    "llm_tokens",
    "Tokens sent to (input) and produced by (output) the providers",
    ["model", "direction"],
)
RATE_LIMIT_REJECTIONS = Counter(
    "rate_limit_rejections",
    "Calls refused with 429 by the service's own limits",
    ["limit", "tier"],
)
# The per-model gate on provider calls (llm/gate.py), counted per process.
LLM_QUEUE_DEPTH = Gauge(
    "llm_queue_depth",
    "Calls waiting for a slot of their model's concurrency gate",
    ["model"],
    multiprocess_mode="livesum",
)
LLM_QUEUE_WAIT = Histogram(
    "llm_queue_wait_seconds",
    "Time a call that found its model's concurrency gate full waited for a slot",
    ["model", "tier"],
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
LLM_QUEUE_TIMEOUTS = Counter(
    "llm_queue_timeouts",
    "Calls refused with 503 after waiting the whole queue timeout for a slot",
    ["model", "tier"],
)
JOBS_SUBMITTED = Counter("jobs_submitted", "Jobs accepted for running", ["kind"])
JOBS_FINISHED = Counter(
    "jobs_finished",
    "Jobs that ended, by how, counted by the process that ran them",
    ["kind", "status"],
)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def multiprocess_mode() -> bool:
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ


def registry() -> CollectorRegistry:
    """What a scrape reports: this process, or every process of the server in multiprocess
    mode."""
    if not multiprocess_mode():
        return REGISTRY
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
    return combined


def render_metrics() -> bytes:
    return generate_latest(registry())


def record_request(scope: Scope, status_code: int, seconds: float) -> None:
    """Time one HTTP request under bounded labels."""
    REQUEST_DURATION.labels(
        method=scope["method"] if scope["method"] in _METHODS else "other",
        route=route_template(scope),
        status=str(status_code),
    ).observe(seconds)


def route_template(scope: Scope) -> str:
    """The matched route's path template, `/v1/jobs/{job_id}`; "unmatched" for a 404.

    The route the router sets in the scope knows its path within its router only
    (`/jobs/{job_id}`); the prefix it was included under is what precedes the part of the
    request's path that the route matches.
    """
    route = scope.get("route")
    pattern = getattr(route, "path_regex", None)
    if route is None or pattern is None:
        return "unmatched"
    path: str = scope["path"]
    for index, character in enumerate(path):
        if character == "/" and pattern.fullmatch(path[index:]):
            return f"{path[:index]}{route.path}"
    return "unmatched"
