"""Public ids: UUIDv7 strings, the same whatever the database.

Version 7 ids sort by creation time, so they index like sequences (no random page splits in
B-trees) and give cursor pagination a stable order for free.
"""

from __future__ import annotations

import uuid

import uuid_utils


def new_id() -> str:
    return str(uuid_utils.uuid7())


def is_id(value: str) -> bool:
    """Whether `value` could be an id at all: anything else is found nowhere, and must not
    reach a database that would refuse it as a malformed UUID."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
