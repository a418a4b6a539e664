"""What the rest of the service needs from a database backend, whichever it is."""

from __future__ import annotations

from typing import Protocol


class Database(Protocol):
    async def start(self) -> None:
        """Prepare the backend once at start-up (for example, create indexes)."""

    async def ping(self) -> None:
        """Round-trip to the server; raises when it cannot be reached."""

    async def close(self) -> None:
        """Release every pooled connection."""
