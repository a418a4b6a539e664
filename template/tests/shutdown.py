"""The moment a server's shutdown begins, as its streams see it, without stopping the server."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

from sse_starlette.sse import AppStatus

if TYPE_CHECKING:
    from collections.abc import Iterator


@contextmanager
def streams_shutting_down() -> Iterator[None]:
    """What uvicorn's SIGTERM handler sets for sse-starlette: each open stream goes on for
    the grace period (`shutdown_grace_seconds`), then ends. Process-wide, so undone after."""
    AppStatus.should_exit = True
    try:
        yield
    finally:
        AppStatus.should_exit = False
