"""Datetimes as the server hands them back, made timezone-aware."""

from __future__ import annotations

from datetime import UTC, datetime


def aware(value: datetime | str) -> datetime:
    """A stored UTC datetime, whatever form the server hands it back in.

    MongoDB returns BSON dates (naive unless the client is tz-aware); some wire-compatible
    servers (nx-27017) return a date written by `$set` as an ISO string.
    """
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def aware_or_none(value: datetime | str | None) -> datetime | None:
    return aware(value) if value is not None else None
