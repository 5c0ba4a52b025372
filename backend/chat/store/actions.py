"""A widget action's transaction: the handler's writes and what the action changed, stored together.

`ActionRows.action` opens it under the conversation's row lock, the lock a new turn takes too, so concurrent actions
and messages queue instead of colliding on the next message's `seq`; `ActionTransaction.record` stores every stored
copy of the action's widgets and its short reply as a message. It all commits together, or not at all.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

from sqlalchemy import update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.chat.events import ApprovalRequest
from backend.chat.pause import waiting
from backend.conversations.service import CONVERSATION_NOT_FOUND
from backend.db import Database
from backend.errors import ConflictError, NotFoundError
from backend.models import Conversation, Message, MessageRole, MessageStatus, utcnow


class ActionRows:
    """The writes of widget actions (`backend.chat.actions` runs the handlers)."""

    def __init__(self, database: Database, *, history_max_items: int) -> None:
        """Write to `database`; a widget is looked for in the latest `history_max_items` messages."""
        self.database = database
        self.history_max_items = history_max_items

    @asynccontextmanager
    async def action(self, user_id: str, conversation_id: uuid.UUID) -> AsyncIterator[ActionTransaction]:
        """A widget action's transaction, under the conversation's row lock: it commits when the block ends.

        Raises:
            NotFoundError: The conversation does not exist or is not the caller's.
            ConflictError: A reply in it waits for the user's answer (`answer_pending`): an action now would put
                its reply after the paused one, which must stay the conversation's last message until answered.
        """
        async with self.database.engine.connect() as conn, conn.begin():
            owner = (
                await conn.execute(
                    select(Conversation.user_id)
                    .where(col(Conversation.id) == conversation_id)
                    .with_for_update(key_share=True)
                )
            ).first()
            if owner is None or owner[0] != user_id:
                raise NotFoundError(CONVERSATION_NOT_FOUND)
            replies = select(Message.status, Message.parts).where(
                col(Message.conversation_id) == conversation_id, col(Message.role) == MessageRole.ASSISTANT
            )
            latest = (await conn.execute(replies.order_by(col(Message.seq).desc()).limit(1))).first()
            if latest is not None and latest[0] == MessageStatus.REQUIRES_ACTION:
                asks = ", ".join(
                    f"{'approval' if isinstance(ask, ApprovalRequest) else 'client tool'} {ask.id} ({ask.name})"
                    for ask in waiting(latest[1])
                )
                raise ConflictError(
                    f"A reply in this conversation waits for your answer to {asks or 'a pending item'}. Answer it "
                    "(or send a new message) before using a widget.",
                    code="answer_pending",
                )
            sessions = async_sessionmaker(
                bind=conn, class_=AsyncSession, expire_on_commit=False, join_transaction_mode="create_savepoint"
            )
            database = replace(self.database, sessions=sessions, reads=sessions)
            yield ActionTransaction(database, conversation_id, self.history_max_items)


@dataclass(frozen=True, slots=True)
class ActionTransaction:
    """One widget action's transaction (see `ActionRows.action`)."""

    database: Database
    """For the action's handler: its sessions join the transaction (a handler's commit only ends a savepoint)."""
    conversation_id: uuid.UUID
    history_max_items: int

    async def record(self, widgets: dict[str, dict[str, object]], reply: str | None) -> uuid.UUID | None:
        """Store what the action changed: every stored copy of its widgets, and its short reply as a message.

        Returns:
            The id of the assistant message holding the reply, or None without a reply.
        """
        now = utcnow()
        async with self.database.sessions() as session:
            recent = (
                await session.exec(
                    select(Message)
                    .where(Message.conversation_id == self.conversation_id)
                    .order_by(col(Message.seq).desc())
                    .limit(self.history_max_items)
                )
            ).all()
            for message in recent:
                if not any(p.get("type") == "widget" and p.get("id") in widgets for p in message.parts):
                    continue
                parts = [
                    {**p, "widget": widgets[p["id"]]} if p.get("type") == "widget" and p.get("id") in widgets else p
                    for p in message.parts
                ]
                await session.exec(update(Message).where(col(Message.id) == message.id).values(parts=parts))
            message_id = None
            if reply:
                message_id = uuid.uuid4()
                leaf = (
                    await session.exec(
                        select(Conversation.active_leaf_id).where(col(Conversation.id) == self.conversation_id)
                    )
                ).first()
                session.add(
                    Message(
                        id=message_id,
                        conversation_id=self.conversation_id,
                        seq=(recent[0].seq + 1) if recent else 1,
                        parent_id=leaf,  # it follows the active branch (a conversation without a tree stays flat)
                        role=MessageRole.ASSISTANT,
                        content=reply,
                        parts=[{"type": "text", "text": reply}],
                        created_at=now,
                    )
                )
                moved = {"updated_at": now} | ({"active_leaf_id": message_id} if leaf is not None else {})
                await session.exec(
                    update(Conversation).where(col(Conversation.id) == self.conversation_id).values(**moved)
                )
            await session.commit()
            return message_id
