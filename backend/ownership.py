"""The one "yours or 404" rule: a row another user owns reads exactly like a row that does not exist."""

from __future__ import annotations

import uuid
from typing import Protocol, TypeVar

from sqlmodel.ext.asyncio.session import AsyncSession

from backend.errors import NotFoundError


class Owned(Protocol):
    """A row with an owner."""

    user_id: str


_Row = TypeVar("_Row", bound=Owned)


async def owned(session: AsyncSession, model: type[_Row], row_id: uuid.UUID, user_id: str, not_found: str) -> _Row:
    """Fetch the row `row_id` of `model` if `user_id` owns it.

    Raises:
        NotFoundError: With `not_found`, if it does not exist or belongs to another user.
    """
    row = await session.get(model, row_id)
    if row is None or row.user_id != user_id:
        raise NotFoundError(not_found)
    return row
