"""Reading conversations and their messages: the list with previews, one conversation, pages of messages.

No HTTP here. Renames and deletes are `backend.conversations.store`'s; a turn's writes are the chat store's
(`backend.chat.store`).
"""

from __future__ import annotations

import uuid
from enum import StrEnum

from sqlalchemy import ScalarSelect, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.conversations import tree
from backend.errors import InvalidInputError
from backend.files.service import files_of_messages
from backend.models import (
    AttachmentPublic,
    Conversation,
    ConversationDetail,
    ConversationSummary,
    Message,
    MessagePublic,
    MessageRole,
    TextRange,
)
from backend.ownership import owned
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
MESSAGE_NOT_FOUND = "Message not found."
PREVIEW_CHARS = 120
PREVIEW_SOURCE_CHARS = 1000  # enough raw text to fill a preview after whitespace is collapsed
MAX_SEQ = 2**31 - 1
DESC_MARK = "<"


class MessageOrder(StrEnum):
    """The order of a page of messages."""

    ASC = "asc"
    DESC = "desc"


async def list_conversations(
    session: AsyncSession,
    user_id: str,
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    archived: bool = False,
) -> tuple[list[ConversationSummary], str | None]:
    """List a user's conversations, most recently updated first, each with a preview of its last message.

    Args:
        session: An open session.
        user_id: The owner.
        limit: Page size.
        cursor: Where the previous page ended.
        archived: List the archived conversations (else the others).

    Returns:
        The page and the cursor of the next page (None at the end).
    """
    query = select(Conversation, last_message_preview()).where(
        Conversation.user_id == user_id, col(Conversation.archived) == archived
    )
    if cursor:
        query = query.where(
            after_time_cursor(col(Conversation.updated_at), col(Conversation.id), cursor, descending=True)
        )
    query = query.order_by(col(Conversation.updated_at).desc(), col(Conversation.id).desc()).limit(limit + 1)
    rows, more = page_of(list((await session.exec(query)).all()), limit)
    page = [summary_of(conversation, preview) for conversation, preview in rows]
    next_cursor = encode_time_cursor(rows[-1][0].updated_at, rows[-1][0].id) if more else None
    return page, next_cursor


def last_message_preview() -> ScalarSelect[str]:
    """A correlated subquery: the start of the conversation's last message with text (see `summary_of`)."""
    return (
        select(func.substr(Message.content, 1, PREVIEW_SOURCE_CHARS + 1))
        .where(Message.conversation_id == Conversation.id, Message.content != "")
        .order_by(col(Message.seq).desc())
        .limit(1)
        .correlate(Conversation)
        .scalar_subquery()
    )


def summary_of(
    conversation: Conversation,
    preview_source: str | None,
    *,
    snippet: str | None = None,
    highlights: list[TextRange] | None = None,
) -> ConversationSummary:
    """A conversation as a list item, its preview cut from `last_message_preview`'s text.

    Args:
        conversation: The row.
        preview_source: The text `last_message_preview` selected for it.
        snippet: In a search, the passage that matched.
        highlights: In a search, the matched words in `snippet`.
    """
    return ConversationSummary.model_validate(
        conversation,
        update={"preview": _preview(preview_source), "snippet": snippet, "snippet_highlights": highlights or []},
    )


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
    return await owned(session, Conversation, conversation_id, user_id, CONVERSATION_NOT_FOUND)


async def conversation_detail(
    session: AsyncSession,
    user_id: str,
    conversation_id: uuid.UUID,
    *,
    limit: int,
    cursor: str | None = None,
    order: MessageOrder = MessageOrder.ASC,
) -> ConversationDetail:
    """One of the user's conversations with a page of its active branch (oldest or newest first), with versions.

    Raises:
        NotFoundError: If it does not exist or belongs to another user.
    """
    conversation = await get_conversation(session, user_id, conversation_id)
    leaf = conversation.active_leaf_id
    messages, next_cursor = await list_messages(
        session, conversation.id, limit=limit, cursor=cursor, leaf=leaf, order=order
    )
    return ConversationDetail.model_validate(
        conversation,
        update={
            "messages": await public_messages(session, messages, branched=leaf is not None),
            "next_cursor": next_cursor,
            "active_message_id": conversation.run_id,
        },
    )


async def list_messages(
    session: AsyncSession,
    conversation_id: uuid.UUID,
    *,
    limit: int,
    cursor: str | None = None,
    leaf: uuid.UUID | None = None,
    order: MessageOrder = MessageOrder.ASC,
) -> tuple[list[Message], str | None]:
    """One page of a conversation's messages by sequence number (never by time), oldest or newest first.

    An ascending cursor holds the last sequence number of its page; a descending one the same behind a marker, so a
    cursor of one order is refused by the other.

    Args:
        session: An open session.
        conversation_id: A conversation the caller has already been checked to own.
        limit: Page size.
        cursor: Where the previous page (of the same order) ended.
        leaf: Only the branch that ends at this message (None: every message, for a conversation without a tree).
        order: `asc` from the first message on; `desc` from the newest back.

    Returns:
        The page, in `order`, and the cursor of the next page (None at the end).

    Raises:
        InvalidInputError: If the cursor was not minted for this order.
    """
    descending = order is MessageOrder.DESC
    query = select(Message).where(Message.conversation_id == conversation_id)
    if leaf is not None:
        query = query.where(tree.on_path(tree.path_to(leaf)))
    if cursor:
        key = decode_cursor(cursor, 2 if descending else 1)
        if descending and key[0] != DESC_MARK:
            raise InvalidInputError(BAD_CURSOR)
        seq = key[-1]
        if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
            raise InvalidInputError(BAD_CURSOR)
        query = query.where(col(Message.seq) < seq if descending else col(Message.seq) > seq)
    query = query.order_by(col(Message.seq).desc() if descending else col(Message.seq)).limit(limit + 1)
    rows, more = page_of(list((await session.exec(query)).all()), limit)
    if not more:
        return rows, None
    return rows, encode_cursor(DESC_MARK, rows[-1].seq) if descending else encode_cursor(rows[-1].seq)


async def public_messages(session: AsyncSession, messages: list[Message], *, branched: bool) -> list[MessagePublic]:
    """A page of messages in their API shape, with the attachments of the user messages (one query per page).

    Args:
        session: An open session.
        messages: One page of one conversation, from `list_messages`.
        branched: The conversation is a tree (it has an active leaf): fill in each message's versions (one more query).

    Returns:
        The messages with `attachments` and their versions (`sibling_ids`, `sibling_index`, `sibling_count`).
    """
    files = await files_of_messages(session, [m.id for m in messages if m.role == MessageRole.USER])
    versions = await tree.versions(session, messages[0].conversation_id, messages) if branched and messages else {}
    public: list[MessagePublic] = []
    for message in messages:
        siblings = versions[message.id].ids if message.id in versions else [message.id]
        public.append(
            MessagePublic.model_validate(
                message,
                update={
                    "attachments": [
                        AttachmentPublic(id=f.id, name=f.name, content_type=f.content_type, size=f.size)
                        for f in files.get(message.id, ())
                    ],
                    "sibling_ids": siblings,
                    "sibling_index": siblings.index(message.id),
                    "sibling_count": len(siblings),
                },
            )
        )
    return public
