"""The conversation rows that REST owns: renaming, archiving, switching the active branch and deleting."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import and_, delete, update
from sqlmodel import col, select

from backend.conversations import tree
from backend.conversations.service import CONVERSATION_NOT_FOUND, MESSAGE_NOT_FOUND, get_conversation
from backend.db import Database
from backend.errors import ConflictError, NotFoundError
from backend.files import service as file_service
from backend.files.storage import FileStorage
from backend.models import Conversation, Message, utcnow

log = logging.getLogger(__name__)


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
                conversation.updated_at = utcnow()
            if archived is not None:
                conversation.archived = archived
            session.add(conversation)
            await session.commit()
            await session.refresh(conversation)  # as stored (see backend.storable)
            return conversation

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
