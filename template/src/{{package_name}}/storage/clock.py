"""Timestamps as every backend stores them."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """The current UTC time, to the millisecond.

    BSON dates hold milliseconds, so a record returned at creation must carry no more
    precision than the same record read back; PostgreSQL keeps the value as given.
    """
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
