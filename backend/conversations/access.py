"""The conversations as a protocol adapter reads and changes them: each call opens its own session.

For adapters (`backend/protocols/*`), which never hold a session or import the store: the same reads as
`GET /api/conversations` (`backend.conversations.service`) and the same writes as `PATCH`/`DELETE`
(`backend.conversations.store`), with the same "yours or 404" rule.
"""

from __future__ import annotations

import uuid

from pydantic import ValidationError

from backend.conversations import service
from backend.conversations.store import ConversationRows
from backend.db import Database
from backend.errors import InvalidInputError
from backend.models import (
    ConversationDetail,
    ConversationPublic,
    ConversationSummary,
    ConversationUpdate,
    FeedbackRating,
)

MESSAGES_PAGE = 500


class ConversationAccess:
    """List, read, rename and delete a user's conversations."""

    def __init__(self, database: Database, rows: ConversationRows) -> None:
        """Read from `database`; write through `rows`."""
        self.database = database
        self.rows = rows

    async def page(
        self, user_id: str, *, limit: int, cursor: str | None = None
    ) -> tuple[list[ConversationSummary], str | None]:
        """One page of the user's (unarchived) conversations, newest first, and the next page's cursor.

        Raises:
            InvalidInputError: A cursor this server did not mint.
        """
        async with self.database.reads() as session:
            return await service.list_conversations(session, user_id, limit=limit, cursor=cursor)

    async def detail(self, user_id: str, conversation_id: uuid.UUID, *, max_messages: int) -> ConversationDetail:
        """The conversation with the first `max_messages` messages of its active branch, oldest first.

        `active_message_id` names the reply that is running, if any.

        Raises:
            NotFoundError: It does not exist or is another user's.
        """
        async with self.database.reads() as session:
            detail = await service.conversation_detail(
                session, user_id, conversation_id, limit=min(MESSAGES_PAGE, max_messages)
            )
            messages = list(detail.messages)
            cursor = detail.next_cursor
            while cursor is not None and len(messages) < max_messages:
                page = await service.conversation_detail(
                    session,
                    user_id,
                    conversation_id,
                    limit=min(MESSAGES_PAGE, max_messages - len(messages)),
                    cursor=cursor,
                )
                messages += page.messages
                cursor = page.next_cursor
            return detail.model_copy(update={"messages": messages, "next_cursor": cursor})

    async def rename(self, user_id: str, conversation_id: uuid.UUID, title: str) -> ConversationPublic:
        """Rename a conversation (1 to 200 characters after trimming, like `PATCH /api/conversations/{id}`).

        Raises:
            InvalidInputError: An empty or too long title.
            NotFoundError: It does not exist or is another user's.
        """
        try:
            update = ConversationUpdate(title=title)
        except ValidationError as error:
            problem = error.errors(include_url=False)[0]
            raise InvalidInputError(f"title: {problem['msg']}") from None
        conversation = await self.rows.update_conversation(user_id, conversation_id, title=update.title)
        return ConversationPublic.model_validate(conversation)

    async def delete(self, user_id: str, conversation_id: uuid.UUID) -> None:
        """Delete a conversation, its messages and the files only it used.

        Raises:
            NotFoundError: It does not exist or is another user's.
        """
        await self.rows.delete_conversation(user_id, conversation_id)

    async def rate(
        self, user_id: str, conversation_id: uuid.UUID, message_ids: list[uuid.UUID], rating: FeedbackRating
    ) -> None:
        """Rate assistant messages of the user's conversation, like `PUT .../messages/{id}/feedback`: all or none.

        Raises:
            InvalidInputError: One of them is not an assistant message (none is rated).
            NotFoundError: The conversation or a message does not exist or is another user's (none is rated).
        """
        await self.rows.set_feedbacks(user_id, conversation_id, message_ids, rating)
