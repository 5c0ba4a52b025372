"""The conversation rows that REST owns: rename, archive, switch the active branch, delete, rate a reply."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import and_, delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from backend.conversations import tree
from backend.conversations.service import CONVERSATION_NOT_FOUND, MESSAGE_NOT_FOUND, get_conversation
from backend.db import Database
from backend.errors import ConflictError, InvalidInputError, NotFoundError
from backend.files import service as file_service
from backend.files.storage import FileStorage
from backend.models import (
    FEEDBACK_COMMENT_MAX,
    Conversation,
    FeedbackPublic,
    FeedbackRating,
    Message,
    MessageFeedback,
    MessageFeedbackPublic,
    MessageRole,
    utcnow,
)

log = logging.getLogger(__name__)


def feedback_comment(comment: str | None) -> str | None:
    """A feedback comment as stored: trimmed, empty as None.

    Raises:
        InvalidInputError: Longer than `FEEDBACK_COMMENT_MAX` characters after trimming.
    """
    text = (comment or "").strip()
    if len(text) > FEEDBACK_COMMENT_MAX:
        raise InvalidInputError(f"comment: at most {FEEDBACK_COMMENT_MAX} characters")
    return text or None


class ConversationRows:
    """Renames, archiving and deletes of conversations, each its own transaction."""

    def __init__(self, database: Database, file_storage: FileStorage | None = None) -> None:
        """Write to `database`; the bytes of files deleted with a conversation are discarded in `file_storage`.

        Args:
            database: Where conversations live.
            file_storage: Where attachment bytes live (None: nothing to discard beyond the database).
        """
        self.database = database
        self.file_storage = file_storage

    async def update_conversation(
        self, user_id: str, conversation_id: uuid.UUID, *, title: str | None = None, archived: bool | None = None
    ) -> Conversation:
        """Set a conversation's title (which counts as an update) and whether it is archived (which does not).

        Raises:
            NotFoundError: If it does not exist or belongs to another user.
        """
        async with self.database.sessions() as session:
            conversation = await get_conversation(session, user_id, conversation_id)
            if title is not None:
                conversation.title = title
                conversation.title_source = "user"  # a title generated later never replaces it
                conversation.updated_at = utcnow()
            if archived is not None:
                conversation.archived = archived
            session.add(conversation)
            await session.commit()
            await session.refresh(conversation)  # as stored (see backend.storable)
            return conversation

    async def set_feedback(
        self,
        user_id: str,
        conversation_id: uuid.UUID,
        message_id: uuid.UUID,
        rating: FeedbackRating | None,
        comment: str | None = None,
    ) -> MessageFeedbackPublic:
        """Rate one assistant message of the user's conversation (`rating` None removes the rating and its comment).

        The entry point for feedback, whatever the protocol: REST's `PUT .../feedback` calls it, an adapter rating
        several items calls `set_feedbacks`.

        Args:
            user_id: The caller; only the conversation's owner may rate its replies.
            conversation_id: The conversation.
            message_id: An assistant message of that conversation.
            rating: `up`, `down`, or None to remove.
            comment: Optional, with a rating only; trimmed, at most `FEEDBACK_COMMENT_MAX` characters.

        Returns:
            The message id and its feedback now (None once removed).

        Raises:
            NotFoundError: The conversation or the message does not exist, or belongs to another user.
            InvalidInputError: The message is the user's own (`not_an_assistant_message`), the comment is too long,
                or a comment comes without a rating.
        """
        (rated,) = await self.set_feedbacks(user_id, conversation_id, [message_id], rating, comment)
        return rated

    async def set_feedbacks(
        self,
        user_id: str,
        conversation_id: uuid.UUID,
        message_ids: list[uuid.UUID],
        rating: FeedbackRating | None,
        comment: str | None = None,
    ) -> list[MessageFeedbackPublic]:
        """`set_feedback` of several messages at once: all of them are rated, or (on any error) none.

        Raises:
            NotFoundError: The conversation or one of the messages does not exist, or belongs to another user.
            InvalidInputError: As `set_feedback`, for any of them.
        """
        text = feedback_comment(comment)
        if rating is None and text is not None:
            raise InvalidInputError("comment: only with a rating")
        ids = list(dict.fromkeys(message_ids))
        try:
            return await self._write_feedback(user_id, conversation_id, ids, rating, text)
        except IntegrityError:  # a concurrent first rating of the same message won the insert: update it
            return await self._write_feedback(user_id, conversation_id, ids, rating, text)

    async def _write_feedback(
        self,
        user_id: str,
        conversation_id: uuid.UUID,
        message_ids: list[uuid.UUID],
        rating: FeedbackRating | None,
        comment: str | None,
    ) -> list[MessageFeedbackPublic]:
        async with self.database.sessions() as session:
            await get_conversation(session, user_id, conversation_id)
            roles = dict(
                (
                    await session.exec(
                        select(Message.id, Message.role).where(
                            col(Message.id).in_(message_ids), col(Message.conversation_id) == conversation_id
                        )
                    )
                ).all()
            )
            if len(roles) != len(message_ids):  # every check before the first write
                raise NotFoundError(MESSAGE_NOT_FOUND)
            if any(role != MessageRole.ASSISTANT for role in roles.values()):
                raise InvalidInputError("Only assistant messages can be rated.", code="not_an_assistant_message")
            existing = {
                row.message_id: row
                for row in (
                    await session.exec(select(MessageFeedback).where(col(MessageFeedback.message_id).in_(message_ids)))
                ).all()
            }
            now = utcnow()
            rows: list[MessageFeedback] = []
            for message_id in message_ids:
                row = existing.get(message_id)
                if rating is None:
                    if row is not None:
                        await session.delete(row)
                    continue
                if row is None:
                    row = MessageFeedback(
                        message_id=message_id,
                        conversation_id=conversation_id,
                        user_id=user_id,
                        rating=rating,
                        created_at=now,
                    )
                row.rating = rating
                row.comment = comment
                row.updated_at = now
                session.add(row)
                rows.append(row)
            await session.commit()
            if rating is None:
                return [MessageFeedbackPublic(message_id=message_id, feedback=None) for message_id in message_ids]
            for row in rows:
                await session.refresh(row)
            return [
                MessageFeedbackPublic(message_id=row.message_id, feedback=FeedbackPublic.model_validate(row))
                for row in rows
            ]

    async def switch_branch(self, user_id: str, conversation_id: uuid.UUID, message_id: uuid.UUID) -> None:
        """Make the branch through `message_id` the active one: it ends at the newest message under it.

        Raises:
            NotFoundError: The conversation or the message does not exist, or is not the caller's.
            ConflictError: A reply is being generated in the conversation (`run_in_progress`).
        """
        async with self.database.sessions() as session:
            conversation = await get_conversation(session, user_id, conversation_id)
            found = await session.exec(
                select(Message.id).where(col(Message.id) == message_id, col(Message.conversation_id) == conversation_id)
            )
            if found.first() is None:
                raise NotFoundError(MESSAGE_NOT_FOUND)
            if conversation.active_leaf_id is None:  # written without the tree: make it one branch first
                await session.exec(tree.chain_in_order(conversation_id))
            leaf = await tree.newest_leaf_under(session, conversation_id, message_id)
            switched = await session.exec(
                update(Conversation)
                .where(
                    col(Conversation.id) == conversation_id,
                    col(Conversation.user_id) == user_id,
                    col(Conversation.run_id).is_(None),
                )
                .values(active_leaf_id=leaf)
            )
            if switched.rowcount != 1:
                await session.rollback()
                raise ConflictError(
                    "A reply is being generated in this conversation; switch branches when it is done.",
                    code="run_in_progress",
                )
            await session.commit()

    async def delete_conversation(self, user_id: str, conversation_id: uuid.UUID) -> None:
        """Delete a conversation and the files attached only in it; the database cascades to its messages and logs.

        The files go in the same transaction; their bytes in `local` storage are discarded after the commit (the
        sweep removes any that a crash leaves behind).

        Raises:
            NotFoundError: If it does not exist or belongs to another user.
        """
        async with self.database.sessions() as session:
            await get_conversation(session, user_id, conversation_id)
            file_ids = await file_service.delete_files_only_used_by(session, conversation_id)
            result = await session.exec(
                delete(Conversation).where(
                    and_(col(Conversation.id) == conversation_id, col(Conversation.user_id) == user_id)
                )
            )
            if result.rowcount == 0:  # deleted concurrently
                await session.rollback()
                raise NotFoundError(CONVERSATION_NOT_FOUND)
            await session.commit()
        if file_ids and self.file_storage is not None:
            await self.file_storage.discard(file_ids)
        if file_ids:
            log.info("conversation %s deleted with %d file(s) only it used", conversation_id, len(file_ids))
