"""A TCP link between the service and one of its servers that a test can cut and restore.

To the service a cut link looks as a server restart or a network failure does: every open
connection is reset and new ones are refused, until the link is restored on the same
address. The server behind it keeps running, so the other tests that share it see nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

_CHUNK = 65536


class Link:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        # Bound and not listening while cut: connections are refused, and no other test
        # can take the port before the link is restored on it.
        self._held: socket.socket | None = _bound(0)
        self.port: int = self._held.getsockname()[1]

    def through(self, url: str) -> str:
        """`url` with its host and port replaced by this link's."""
        parts = urlsplit(url)
        credentials, _, _ = parts.netloc.rpartition("@")
        address = f"127.0.0.1:{self.port}"
        return urlunsplit(
            parts._replace(netloc=f"{credentials}@{address}" if credentials else address)
        )

    async def restore(self) -> None:
        if self._held is not None:
            self._held.listen()
            self._server = await asyncio.start_server(self._relay, sock=self._held)
            self._held = None

    async def cut(self) -> None:
        """Reset the open connections and refuse new ones."""
        for writer in list(self._writers):
            reset(writer)
        self._writers.clear()
        if self._server is not None:
            self._server.close()  # and its listening socket
            self._server = None
            self._held = _bound(self.port)

    async def close(self) -> None:
        await self.cut()
        if self._held is not None:
            self._held.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            reset(writer)
            return
        self._writers |= {writer, upstream_writer}
        try:
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        finally:
            for side in (writer, upstream_writer):
                self._writers.discard(side)
                side.close()


def _bound(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a reset (RST), as a server that went away does, not an orderly close."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.close()


@asynccontextmanager
async def link_to(url: str) -> AsyncIterator[Link]:
    """An open link to the server of `url`; `link.through(url)` is the URL to give the
    service instead."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    link = Link(parts.hostname, parts.port)
    await link.restore()
    try:
        yield link
    finally:
        await link.close()
