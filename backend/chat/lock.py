"""The per-conversation run lock, kept in the database so it holds across workers and machines.

A run takes the lock with one conditional UPDATE and refreshes it while it lasts. A worker that crashes stops
refreshing, so its lock expires after the TTL and the conversation is usable again.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import or_, update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.models import Conversation, utcnow


def ttl_delta(ttl: float) -> timedelta:
    """The lock lifetime as a timedelta."""
    return timedelta(seconds=ttl)


async def acquire(
    session: AsyncSession, conversation_id: uuid.UUID, user_id: str, run_id: uuid.UUID, ttl: float
) -> bool:
    """Take the lock if it is free or expired (not committed).

    Returns:
        True if this run now holds the lock.
    """
    now = utcnow()
    result = await session.exec(  # type: ignore[call-overload]
        update(Conversation)
        .where(
            col(Conversation.id) == conversation_id,
            col(Conversation.user_id) == user_id,
            or_(col(Conversation.run_id).is_(None), col(Conversation.run_expires_at) < now),
        )
        .values(run_id=run_id, run_expires_at=now + ttl_delta(ttl))
    )
    return result.rowcount == 1


async def refresh(session: AsyncSession, conversation_id: uuid.UUID, run_id: uuid.UUID, ttl: float) -> bool:
    """Push the expiry of a lock this run holds (not committed).

    Returns:
        False if the lock was lost (it expired and another run took it).
    """
    result = await session.exec(  # type: ignore[call-overload]
        update(Conversation)
        .where(col(Conversation.id) == conversation_id, col(Conversation.run_id) == run_id)
        .values(run_expires_at=utcnow() + ttl_delta(ttl))
    )
    return result.rowcount == 1


async def release(session: AsyncSession, conversation_id: uuid.UUID, run_id: uuid.UUID) -> None:
    """Free the lock if this run still holds it (not committed)."""
    await session.exec(  # type: ignore[call-overload]
        update(Conversation)
        .where(col(Conversation.id) == conversation_id, col(Conversation.run_id) == run_id)
        .values(run_id=None, run_expires_at=None)
    )
