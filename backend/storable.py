"""The one text policy for everything we store: strings PostgreSQL and SQLite can both hold, the same on both.

PostgreSQL `text` and `jsonb` cannot hold U+0000, and no UTF-8 database can hold a lone surrogate (U+D800 to U+DFFF
without its pair), which Python strings decoded from JSON may contain. Every text and JSON column goes through the
column types below, which replace each such character with U+FFFD (the replacement character) as the value is
written. Nothing else changes, so valid text round-trips exactly, and a value that would have made the write fail is
stored readably instead.
"""

from __future__ import annotations

import json
import re
from typing import TypeVar

from sqlalchemy import JSON, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

REPLACEMENT = "\ufffd"
JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]
_T = TypeVar("_T")
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def storable_text(value: str) -> str:
    """Replace U+0000 and lone surrogates with U+FFFD; any other text is returned unchanged (and fast)."""
    if value.isascii():
        return value.replace("\x00", REPLACEMENT) if "\x00" in value else value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # Re-pair what can be paired, then replace what cannot.
        value = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return value.replace("\x00", REPLACEMENT) if "\x00" in value else value


def storable_json(value: _T) -> _T:
    """Apply `storable_text` to every string (keys included) inside a JSON-like value."""
    if isinstance(value, str):
        return storable_text(value)  # type: ignore[return-value]
    if isinstance(value, dict):
        return {storable_text(k) if isinstance(k, str) else k: storable_json(v) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, list | tuple):
        return [storable_json(v) for v in value]  # type: ignore[return-value]
    return value


def storable_json_text(value: str) -> str:
    r"""Apply the policy to JSON text (a tool call's arguments) as decoded: a lone surrogate becomes U+FFFD.

    The model's JSON may carry one escaped (`\ud800`), which `storable_text` cannot see but which fails as soon as the
    decoded value is encoded as UTF-8. Text without one (or that is not JSON) is returned unchanged.
    """
    if value.isascii() and not _ESCAPED_SURROGATE.search(value):
        return value
    try:
        decoded = json.loads(value)
    except ValueError:
        return storable_text(value)
    cleaned = storable_json(decoded)
    return value if cleaned == decoded and storable_text(value) == value else json.dumps(cleaned, ensure_ascii=False)


class SafeText(TypeDecorator[str]):
    """`TEXT` that stores any Python string under the policy above."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        """Clean the value on its way to the database."""
        return storable_text(value) if value is not None else None


class SafeString(TypeDecorator[str]):
    """`VARCHAR(n)` that stores any Python string under the policy above."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        """Clean the value on its way to the database."""
        return storable_text(value) if value is not None else None


class SafeJSON(TypeDecorator[object]):
    """`JSON` whose strings are stored under the policy above."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: object, dialect: Dialect) -> object:
        """Clean the value on its way to the database."""
        return storable_json(value)
