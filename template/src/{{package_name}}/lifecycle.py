"""Graceful shutdown: what SIGTERM changes before the server stops taking requests.

The health checks answer 503 from the moment the signal arrives, so probes stop sending
traffic; `stopping` wakes what must tell its clients so, and the server's own handler runs
once they have (`farewell`), as uvicorn closes every socket (1012) the moment it runs. The
server then drains requests and runs the lifespan's shutdown, which closes the pools.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from contextlib import contextmanager, suppress
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import FrameType

log = structlog.get_logger(__name__)

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# How long the server's shutdown waits for the clients to be told (a stalled one is not).
FAREWELL_SECONDS = 1.0


class Lifecycle:
    """Whether this process has been asked to stop."""

    def __init__(self) -> None:
        self.draining = False
        # Set with `draining`, for what must act on it at once (asyncio events: made before
        # any event loop runs, they bind to the first that waits on them).
        self.stopping = asyncio.Event()
        self._farewells = 0
        self._told = asyncio.Event()
        self._told.set()
        self._shutting_down: asyncio.Task[None] | None = None

    def start_draining(self, reason: str) -> None:
        if not self.draining:
            self.draining = True
            self.stopping.set()
            log.info("shutdown_started", reason=reason)

    @contextmanager
    def farewell(self) -> Iterator[None]:
        """Around the wait for `stopping` and the message that follows it: the server's
        shutdown waits until every one has ended (or `FAREWELL_SECONDS`)."""
        self._farewells += 1
        self._told.clear()
        try:
            yield
        finally:
            self._farewells -= 1
            if not self._farewells:
                self._told.set()

    def stop_then(self, reason: str, server_stop: Callable[[], object]) -> None:
        """Start draining, then run `server_stop` once the clients have been told; a second
        signal runs it at once (uvicorn: exit without waiting)."""
        if self.draining:
            server_stop()
            return
        self.start_draining(reason)
        self._shutting_down = asyncio.get_running_loop().create_task(
            self._after_farewells(server_stop)
        )

    async def _after_farewells(self, server_stop: Callable[[], object]) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._told.wait(), FAREWELL_SECONDS)
        server_stop()


@contextmanager
def draining_on_signals(lifecycle: Lifecycle) -> Iterator[None]:
    """Put `lifecycle` into draining when the server's shutdown signal arrives, then let the
    server's own handler run. Where no server installed a handler (a test client), or off
    the main thread, there is nothing to wrap and nothing is changed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    wrapped: dict[signal.Signals, Callable[[int, FrameType | None], Any]] = {}
    for signum in SHUTDOWN_SIGNALS:
        handler = signal.getsignal(signum)
        if callable(handler):
            wrapped[signum] = handler
            signal.signal(signum, _draining_then(lifecycle, handler, loop))
    try:
        yield
    finally:
        for signum, handler in wrapped.items():
            signal.signal(signum, handler)


def _draining_then(
    lifecycle: Lifecycle,
    handler: Callable[[int, FrameType | None], Any],
    loop: asyncio.AbstractEventLoop,
) -> Callable[[int, FrameType | None], None]:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        # A signal handler interrupts arbitrary code, so the change (which logs, and
        # logging takes locks) is made on the event loop, as its next step.
        server_stop = partial(handler, signum, frame)
        loop.call_soon_threadsafe(lifecycle.stop_then, signal.Signals(signum).name, server_stop)

    return on_signal
