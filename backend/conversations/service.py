"""Conversations and their messages: listing, reading, renaming, deleting and appending. No HTTP here."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, func, insert, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.errors import InvalidInputError, NotFoundError
from backend.models import Conversation, ConversationSummary, Message, utcnow
from backend.pagination import (
    BAD_CURSOR,
    DEFAULT_LIMIT,
    after_time_cursor,
    decode_cursor,
    encode_cursor,
    encode_time_cursor,
    page_of,
)

CONVERSATION_NOT_FOUND = "Conversation not found."
PREVIEW_CHARS = 120
PREVIEW_SOURCE_CHARS = 1000  # enough raw text to fill a preview after whitespace is collapsed
MAX_SEQ = 2**31 - 1
MESSAGE_COLUMNS = tuple(Message.__table__.columns)  # type: ignore[attr-defined]


async def list_conversations(
    session: AsyncSession, user_id: str, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> tuple[list[ConversationSummary], str | None]:
    """List a user's conversations, most recently updated first, each with a preview of its last message.

    Args:
        session: An open session.
        user_id: The owner.
        limit: Page size.
        cursor: Where the previous page ended.

    Returns:
        The page and the cursor of the next page (None at the end).
    """
    last_message = (
        select(func.substr(Message.content, 1, PREVIEW_SOURCE_CHARS + 1))
        .where(Message.conversation_id == Conversation.id, Message.content != "")
        .order_by(col(Message.seq).desc())
        .limit(1)
        .correlate(Conversation)
        .scalar_subquery()
    )
    query = select(Conversation, last_message).where(Conversation.user_id == user_id)
    if cursor:
        query = query.where(
            after_time_cursor(col(Conversation.updated_at), col(Conversation.id), cursor, descending=True)
        )
    query = query.order_by(col(Conversation.updated_at).desc(), col(Conversation.id).desc()).limit(limit + 1)
    rows, more = page_of(list((await session.exec(query)).all()), limit)
    page = [
        ConversationSummary.model_validate(conversation, update={"preview": _preview(preview)})
        for conversation, preview in rows
    ]
    next_cursor = encode_time_cursor(rows[-1][0].updated_at, rows[-1][0].id) if more else None
    return page, next_cursor


def _preview(text: str | None) -> str | None:
    flat = " ".join((text or "").split())
    if not flat:
        return None
    if len(flat) <= PREVIEW_CHARS and len(text or "") <= PREVIEW_SOURCE_CHARS:
        return flat
    return flat[: PREVIEW_CHARS - 1].rstrip() + "…"


async def get_conversation(session: AsyncSession, user_id: str, conversation_id: uuid.UUID) -> Conversation:
    """Fetch one of the user's conversations.

    Raises:
        NotFoundError: If it does not exist or belongs to another user.
    """
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None or conversation.user_id != user_id:
        raise NotFoundError(CONVERSATION_NOT_FOUND)
    return conversation


async def list_messages(
    session: AsyncSession, conversation_id: uuid.UUID, *, limit: int, cursor: str | None = None
) -> tuple[list[Message], str | None]:
    """One page of a conversation's messages in order (by sequence number, never by time).

    Args:
        session: An open session.
        conversation_id: A conversation the caller has already been checked to own.
        limit: Page size.
        cursor: Where the previous page ended.

    Returns:
        The page and the cursor of the next page (None at the end).
    """
    query = select(Message).where(Message.conversation_id == conversation_id)
    if cursor:
        (after_seq,) = decode_cursor(cursor, 1)
        if type(after_seq) is not int or not 0 <= after_seq <= MAX_SEQ:
            raise InvalidInputError(BAD_CURSOR)
        query = query.where(col(Message.seq) > after_seq)
    query = query.order_by(col(Message.seq)).limit(limit + 1)
    rows, more = page_of(list((await session.exec(query)).all()), limit)
    return rows, encode_cursor(rows[-1].seq) if more else None


async def rename_conversation(
    session: AsyncSession, user_id: str, conversation_id: uuid.UUID, title: str
) -> Conversation:
    """Set a conversation's title and commit.

    Raises:
        NotFoundError: If it does not exist or belongs to another user.
    """
    conversation = await get_conversation(session, user_id, conversation_id)
    conversation.title = title
    conversation.updated_at = utcnow()
    session.add(conversation)
    await session.commit()
    return conversation


async def delete_conversation(session: AsyncSession, user_id: str, conversation_id: uuid.UUID) -> None:
    """Delete a conversation; the database cascades to its messages.

    Raises:
        NotFoundError: If it does not exist or belongs to another user.
    """
    result = await session.exec(
        delete(Conversation).where(col(Conversation.id) == conversation_id, col(Conversation.user_id) == user_id)
    )
    await session.commit()
    if result.rowcount == 0:
        raise NotFoundError(CONVERSATION_NOT_FOUND)


async def create_conversation(session: AsyncSession, user_id: str, title: str, **fields: Any) -> Conversation:
    """Insert a conversation (flushed, not committed; the caller commits with whatever goes with it)."""
    conversation = Conversation(user_id=user_id, title=title, **fields)
    session.add(conversation)
    await session.flush()
    return conversation


async def append_message(
    session: AsyncSession, conversation_id: uuid.UUID, *, seq: int | None = None, **fields: Any
) -> uuid.UUID:
    """Add a message at the end of a conversation and move the conversation's `updated_at` (not committed).

    The sequence number is computed in the INSERT itself (the next after the current last one) unless the caller
    knows it; the unique (conversation_id, seq) constraint turns a lost race into an error instead of a reorder.

    Returns:
        The new message's id.
    """
    message = Message(conversation_id=conversation_id, seq=seq or 0, **fields)
    values = {column.name: getattr(message, column.name) for column in MESSAGE_COLUMNS}
    if seq is None:
        values["seq"] = (
            select(func.coalesce(func.max(Message.seq), 0) + 1)
            .where(Message.conversation_id == conversation_id)
            .scalar_subquery()
        )
    await session.exec(insert(Message).values(**values))
    await session.exec(
        update(Conversation).where(col(Conversation.id) == conversation_id).values(updated_at=message.created_at)
    )
    return message.id
