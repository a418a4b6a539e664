"""What uvicorn lacks against slow clients: it never times out a connection that sends its
request head slowly (slowloris), or sends nothing at all. The protocol here does, for
`python -m` (uvicorn) and for gunicorn's workers (gunicorn.conf.py) alike."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .settings import get_settings

if TYPE_CHECKING:
    import asyncio


class HeadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol (httptools, the one uvicorn picks when installed), with a
    deadline for each request head: `http_header_timeout` seconds from the connection, or
    from the first byte of a request on a kept-alive one, to the end of its headers. Past
    it the connection is closed. Idle kept-alive connections have uvicorn's own
    `timeout_keep_alive`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_timeout = get_settings().http_header_timeout
        self.head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_deadline()

    def on_headers_complete(self) -> None:
        # Also for an upgrade handshake, which hands the connection over to another protocol.
        self._disarm_head_deadline()
        super().on_headers_complete()

    def _arm_head_deadline(self) -> None:
        if self.head_deadline is None:
            self.head_deadline = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _disarm_head_deadline(self) -> None:
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def _head_timed_out(self) -> None:
        self.head_deadline = None
        if not self.transport.is_closing():
            self.logger.info("Closing a connection whose request head took too long")
            self.transport.close()
