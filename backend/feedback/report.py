"""Recent feedback across every user, newest first: what the operator's command reads. No HTTP here."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import null
from sqlmodel import SQLModel, col, select

from backend.db import Database
from backend.models import FeedbackRating, Message, MessageFeedback


class FeedbackEntry(SQLModel):
    """One rating as the operator sees it. `reply` is the rated message's text, only when asked for."""

    updated_at: datetime
    rating: FeedbackRating
    user_id: str
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    agent: str | None = None
    comment: str | None = None
    reply: str | None = None


async def recent_feedback(
    database: Database,
    *,
    since: datetime,
    until: datetime,
    rating: FeedbackRating | None,
    user_id: str | None = None,
    limit: int = 100,
    with_text: bool = False,
) -> list[FeedbackEntry]:
    """Feedback last changed in `[since, until)`, newest first.

    Args:
        database: Where the feedback lives.
        since: Oldest change included.
        until: Exclusive end.
        rating: `up` or `down` only, or None for both.
        user_id: One user's only (None: everyone's).
        limit: At most this many entries.
        with_text: Also read each rated reply's text (else it is never loaded).

    Returns:
        The entries, newest first.
    """
    reply_text = col(Message.content) if with_text else null()
    query = (
        select(MessageFeedback, col(Message.agent), reply_text)
        .join(Message, col(Message.id) == col(MessageFeedback.message_id))
        .where(col(MessageFeedback.updated_at) >= since, col(MessageFeedback.updated_at) < until)
    )
    if rating is not None:
        query = query.where(col(MessageFeedback.rating) == rating)
    if user_id is not None:
        query = query.where(col(MessageFeedback.user_id) == user_id)
    query = query.order_by(col(MessageFeedback.updated_at).desc(), col(MessageFeedback.message_id)).limit(limit)
    async with database.sessions() as session:
        rows = (await session.exec(query)).all()
    return [
        FeedbackEntry.model_validate(feedback, update={"agent": agent, "reply": reply})
        for feedback, agent, reply in rows
    ]
