"""Timestamps as every backend stores them."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """The current UTC time, to the millisecond.

    Some backends store milliseconds only (BSON dates), and a record returned at creation
    must equal the same record read back, whichever backend holds it.
    """
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
