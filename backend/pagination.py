"""Opaque keyset cursors: a page ends at a row's sort key, and the next page starts strictly after it."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, literal, tuple_

from backend.errors import InvalidInputError

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
BAD_CURSOR = "cursor: not a cursor this server issued for this list"

T = TypeVar("T")


def encode_cursor(*key: Any) -> str:
    """Encode a row's sort key (strings and numbers) as an opaque, URL-safe cursor.

    Args:
        *key: The sort-key values of the last row on a page.

    Returns:
        A base64url string without padding.
    """
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    """Decode a cursor made by `encode_cursor`.

    Args:
        cursor: The client's cursor.
        arity: How many key values the cursor must hold.

    Returns:
        The key values.

    Raises:
        InvalidInputError: If the cursor was not made by this server for this list.
    """
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError):
        key = None
    if not isinstance(key, list) or len(key) != arity:
        raise InvalidInputError(BAD_CURSOR)
    return key


def encode_time_cursor(moment: datetime, row_id: uuid.UUID) -> str:
    """Cursor for lists sorted by (timestamp, id)."""
    return encode_cursor(moment.isoformat(), str(row_id))


def time_key(moment_text: object, id_text: object) -> tuple[datetime, uuid.UUID]:
    """The (timestamp, id) pair of a decoded cursor, as `encode_time_cursor` wrote it.

    Raises:
        InvalidInputError: If either value is not what this server writes.
    """
    try:
        if not isinstance(moment_text, str) or not isinstance(id_text, str):
            raise TypeError("not text")
        moment, row_id = datetime.fromisoformat(moment_text), uuid.UUID(id_text)
        if moment.tzinfo is None:
            raise ValueError("naive timestamp")
        return moment.astimezone(UTC), row_id
    except (TypeError, ValueError, OverflowError):
        raise InvalidInputError(BAD_CURSOR) from None


def after_time_cursor(time_column: Any, id_column: Any, cursor: str, *, descending: bool) -> ColumnElement[bool]:
    """A WHERE clause selecting the rows that sort strictly after the cursor's row.

    Args:
        time_column: The timestamp column of the sort key.
        id_column: The id column that breaks ties.
        cursor: A cursor from `encode_time_cursor`.
        descending: True when the list is sorted newest first.

    Returns:
        The keyset condition, usable by an index on (time, id).

    Raises:
        InvalidInputError: If the cursor is malformed.
    """
    moment, row_id = time_key(*decode_cursor(cursor, 2))
    # A row-value comparison, unlike the equivalent OR form, is an index condition on (…, time, id) in PostgreSQL,
    # so a deep page seeks straight to its place instead of filtering every row before it.
    key = tuple_(time_column, id_column)
    bound = tuple_(literal(moment, time_column.type), literal(row_id, id_column.type))
    return key < bound if descending else key > bound


def page_of(rows: list[T], limit: int) -> tuple[list[T], bool]:
    """Split a `limit + 1` fetch into the page and whether another page follows."""
    return rows[:limit], len(rows) > limit
