"""A slow client (slowloris) on a raw socket: it sends its bytes one at a time, or stops, and
measures how long the server keeps the connection open."""

from __future__ import annotations

import socket
import time

# Longer than any timeout the tests set: a connection still open then was never timed out.
PATIENCE = 10.0
BYTE_INTERVAL = 0.2


def seconds_until_closed(url: str, first: bytes = b"", trickle: bytes = b"") -> float:
    """Connect, send `first` at once, then `trickle` a byte every BYTE_INTERVAL seconds;
    the seconds from the last byte of `first` until the server closes the connection (any
    answer it sends first is read and ignored), or PATIENCE if it never does."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=PATIENCE) as connection:
        connection.sendall(first)
        start = time.monotonic()
        connection.settimeout(BYTE_INTERVAL)
        remaining = trickle
        while time.monotonic() - start < PATIENCE:
            if remaining:
                try:
                    connection.sendall(remaining[:1])
                except OSError:
                    return time.monotonic() - start
                remaining = remaining[1:]
            try:
                if not connection.recv(65536):
                    return time.monotonic() - start
            except TimeoutError:
                continue
            except OSError:
                return time.monotonic() - start
        return PATIENCE
